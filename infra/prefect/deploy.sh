#!/usr/bin/env bash
# `make deploy`: registers the pipeline with the Prefect server at $PREFECT_API_URL (`make prefect-server`): the
# process work pool, prefect.yaml's deployments (nightly at 03:00 UTC, one run at a time) and the automation that marks
# runs whose heartbeat stopped as Crashed. Safe to re-run: each is updated, not duplicated. `make worker` runs them.
set -euo pipefail
cd "$(dirname "$0")/../.."   # prefect deploy records this folder as where the worker finds the code
: "${PREFECT_API_URL:?set it to the Prefect server API, e.g. http://127.0.0.1:4200/api}"
automation=infra/prefect/crash-zombie-runs.yaml

if ! python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + "/health", timeout=5)' \
    "$PREFECT_API_URL" 2>/dev/null; then
  echo "no Prefect server answers at $PREFECT_API_URL: start one (make prefect-server)" >&2
  exit 1
fi
prefect work-pool inspect pipeline >/dev/null 2>&1 || prefect work-pool create pipeline --type process
prefect --no-prompt deploy --all
name=$(python -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["name"])' "$automation")
if prefect automation inspect "$name" >/dev/null 2>&1; then
  prefect --no-prompt automation delete "$name"
fi
prefect automation create --from-file "$automation"
