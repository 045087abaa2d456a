#!/usr/bin/env bash
# MLflow UI/server over the project's own store, on loopback unless HOST says otherwise.
# Another store (a project in another folder, a test's): MLFLOW_BACKEND_STORE_URI=sqlite:////abs/path/mlflow.db and
# MLFLOW_DEFAULT_ARTIFACT_ROOT=/abs/path/artifacts (relative paths are taken from the repo root). WORKERS: 4 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/mlflow server --backend-store-uri "${MLFLOW_BACKEND_STORE_URI:-sqlite:///mlruns/mlflow.db}" \
  --default-artifact-root "${MLFLOW_DEFAULT_ARTIFACT_ROOT:-$PWD/mlruns/artifacts}" \
  --host "${HOST:-127.0.0.1}" --port "${PORT:-5000}" --workers "${WORKERS:-4}"
