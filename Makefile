.PHONY: setup pipeline repro test bench serve mlflow-ui prefect-server deploy worker schedule retrain-check push team-up \
        team-down
export PATH := $(CURDIR)/.venv/bin:$(PATH)
PREFECT_API_URL ?= http://127.0.0.1:4200/api

setup:            ## both environments (idempotent)
	bash infra/setup.sh

pipeline: setup   ## the whole pipeline on params.yaml through the Prefect flow (skips stages DVC says are up to date)
	python -m tasks pipeline

repro: setup      ## the same stages through DVC, then the scrubbed outputs to the DVC remote
	dvc repro
	python -m tasks push

test: setup       ## the test suite (installs Debian's chromium and postgresql first, for the UI and team-mode tests)
	bash infra/system_deps.sh
	python -m pytest -q tests

bench: setup      ## each against its baseline: near-dedup vs datasketch, PII vs presidio, toxicity on a labelled set (~1 min), serving: vLLM vs HF generate (1,000 requests, ~25 min), int8 weights/activations/SmoothQuant vs the merged model (~4 min, after make pipeline), reward model/GRPO/RLOO vs DPO per step (~5 min), serve.record's cost vs vLLM's serving rate (~10 s), clean at 1x-64x the corpus (~45 min, ~17 GB of disk)
	python -m benchmarks.dedup
	python -m benchmarks.pii
	python -m benchmarks.toxicity
	python -m benchmarks.serving
	python -m benchmarks.quantization
	python -m benchmarks.align_cost
	python -m benchmarks.record_overhead
	python -m benchmarks.scale

serve: setup      ## the registry's @champion at 127.0.0.1:8000, following promote/rollback, until Ctrl-C (ARGS="--version 3", "--alias challenger", "--port 9000")
	python -m tasks serve $(ARGS)

mlflow-ui:        ## browse runs, metrics, artifacts and the registry at http://127.0.0.1:5000
	bash infra/mlflow_server.sh

prefect-server:   ## the Prefect server and UI at http://127.0.0.1:4200 (the flow also runs without it)
	prefect server start --host 127.0.0.1

deploy: setup     ## register prefect.yaml's deployment (nightly 03:00 UTC, one run at a time), its process pool and the crashed-run automation with the server at PREFECT_API_URL
	PREFECT_API_URL=$(PREFECT_API_URL) bash infra/prefect/deploy.sh

worker: setup     ## run the deployment's flow runs on this machine, as they come due
	PREFECT_API_URL=$(PREFECT_API_URL) prefect worker start --pool pipeline

schedule: deploy worker  ## deploy, then stay up as the worker that runs the nightly pipeline (needs make prefect-server)

retrain-check: setup  ## which stages are stale against dvc.lock, and why: the decision CI takes (ARGS="sft": that stage and its upstream); exit 0 nothing to do, 1 stages to run, 2 cannot tell (make reports 1 and 2 as its own 2)
	python -m tasks retrain-check $(ARGS)

push: setup       ## the scrubbed outputs to the DVC remote (.dvc/config); ARGS=--include-raw adds data/ingested, the raw corpus with its PII
	python -m tasks push $(ARGS)

team-up:          ## team mode without Docker: PostgreSQL, MLflow (basic auth) and Prefect on 127.0.0.1 (needs POSTGRES_PASSWORD, MLFLOW_AUTH_ADMIN_PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY); infra/team.sh env prints the client settings
	bash infra/team.sh up

team-down:        ## stop what team-up started (the data stays in .team/)
	bash infra/team.sh down
