#!/usr/bin/env bash
# MLflow UI/server over the project's own store, on loopback unless HOST says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/mlflow server --backend-store-uri sqlite:///mlruns/mlflow.db \
  --default-artifact-root "$PWD/mlruns/artifacts" --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}"
