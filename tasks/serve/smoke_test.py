"""Stage 9: can the candidate be served? Start it in vLLM's OpenAI-compatible server, check health, ask one question,
stop cleanly. `make serve` (tasks/serve/serve_registry.py) is what serves users; this stage proves the checkpoint will
start and answer there, and in a flow run its server stays up for evaluate (tasks/common/vllm_server.py:kept_servers)."""
from __future__ import annotations

import time
from pathlib import Path

from tasks.common.hardware import serving_dtype
from tasks.common.jsonl import write_json
from tasks.common.vllm_server import ServerError, VLLMServer
from tasks.config import VllmConfig
from tasks.paths import Paths

SMOKE_PROMPT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def smoke_test(cfg: VllmConfig, model_dir: Path = Paths.quantized, report: Path = Paths.smoke_test) -> dict:
    with VLLMServer(cfg, model_dir) as server:
        t0 = time.monotonic()
        reply = server.chat(SMOKE_PROMPT)
        latency = time.monotonic() - t0
        answer = reply["choices"][0]["message"]["content"]
    if not answer.strip():
        raise ServerError("smoke test: the served model returned an empty answer")
    result = {"startup_s": server.startup_s, "smoke_latency_s": round(latency, 3), "smoke_prompt":
              SMOKE_PROMPT[0]["content"], "smoke_answer": answer, "completion_tokens":
              reply["usage"]["completion_tokens"], "dtype": serving_dtype(cfg.dtype), "model_dir": str(model_dir),
              "command": server.command()}
    write_json(report, result)
    return {k: v for k, v in result.items() if k != "command"}
