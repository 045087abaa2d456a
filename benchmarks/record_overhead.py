"""What `serve.record` costs, against what it must keep up with: vLLM's measured serving rate on this CPU.

The recorder (tasks/serve/recorder.py) does two things per chat exchange: on the proxy's request path, parse the
relayed answer and queue it (`exchange`); on its writer thread, scrub the prompt and reply of PII and append a line.
Both are timed here on real exchanges (the first user turn and reply of ShareGPT conversations, answers as vLLM's
JSON), one core, in one process. The baseline is the serving rate the README measured for vLLM at concurrency 32 on
the 2-core CPU (4.51 requests/s): the writer must sustain far more exchanges/s, and the request-path cost must be a
small share of a request's time.

    .venv/bin/python -m benchmarks.record_overhead [--exchanges 2000]
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path

from tasks.config import load_config
from tasks.data.ingest import EMBEDDED, Malformed, normalise, raw_records
from tasks.serve.recorder import Recorder

VLLM_REQ_S = 4.51      # README "Serving under load": vLLM, 1,000 requests at concurrency 32, this 2-core EPYC
VLLM_E2E_P50_S = 6.94


def exchanges(n: int) -> list[tuple[dict, bytes]]:
    found = []
    for _, record, reason in itertools.islice(raw_records(EMBEDDED, offline=True), 4 * n):
        try:
            messages = normalise(record)[1] if reason is None else []
        except Malformed:
            continue
        if len(messages) >= 2 and messages[0]["role"] == "user" and messages[1]["role"] == "assistant":
            answer = {"id": f"chatcmpl-{len(found)}", "object": "chat.completion",
                      "choices": [{"index": 0, "message": messages[1], "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 50, "completion_tokens": 200}}
            found.append(({"messages": messages[:1]}, json.dumps(answer).encode()))
        if len(found) == n:
            break
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--exchanges", type=int, default=2000)
    args = parser.parse_args()
    cfg = load_config()
    rows = exchanges(args.exchanges)
    chars = sum(len(r["messages"][0]["content"]) + len(a) for r, a in rows) / len(rows)
    with tempfile.TemporaryDirectory() as tmp:
        recorder = Recorder(cfg.flywheel, cfg.clean.pii, Path(tmp) / "live")
        t0 = time.perf_counter()
        for request, answer in rows:
            recorder.exchange(request, answer, 1, 0.1)
        request_path = time.perf_counter() - t0
        recorder.close(timeout_s=3600)
        total = time.perf_counter() - t0
        written = recorder.written
    per_request_ms = 1000 * request_path / len(rows)
    print(f"{len(rows)} real exchanges (mean {chars:.0f} characters), written {written}")
    print(f"| part | per exchange | exchanges/s | vs vLLM serving ({VLLM_REQ_S} req/s) |")
    print("|---|---:|---:|---:|")
    print(f"| request path (parse, queue) | {per_request_ms:.3f} ms | {len(rows) / request_path:.0f} | "
          f"{per_request_ms / 1000 / VLLM_E2E_P50_S:.5%} of a request's e2e p50 |")
    print(f"| writer (scrub, append) | {1000 * total / len(rows):.2f} ms | {len(rows) / total:.0f} | "
          f"{len(rows) / total / VLLM_REQ_S:.0f}x the serving rate |")


if __name__ == "__main__":
    main()
