"""Serving under load: vLLM (continuous batching, `vllm bench serve`) vs HF transformers `generate` with static
batching, the server a user would otherwise write. Same model, same dtype, same prompts, same output lengths, one run.

Prompts are held-out ShareGPT conversations (the pipeline's hash split, read from the installed package, so this runs
on a fresh clone): each request is a user turn with its real length (cut to --max-prompt-tokens) and asks for
as many tokens as the real reply had (cut to --max-output), generated to exactly that count on both sides (vLLM
`ignore_eos`; HF `min_new_tokens`). vLLM gets --concurrency requests in flight; HF takes them --concurrency at a time in
arrival order and answers a batch when its longest request is done. Per request on the HF side, TTFT is the batch's
first decoding step and the end is the step that produced its last token (as if streamed), from its batch's start.

    .venv/bin/python -m benchmarks.serving [--requests 1000] [--concurrency 32] [--model DIR]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from tasks.common.hardware import hardware_tags, serving_dtype
from tasks.common.vllm_server import VLLMServer
from tasks.config import apply_runtime_env, load_config
from tasks.data.ingest import Malformed, _json_array_records, normalise, sharegpt_package_file
from tasks.data.split import in_test_split
from tasks.evaluate.evaluate import bench_request, bench_serve
from tasks.paths import Paths


def held_out_requests(tokenizer, n: int, fraction: float, max_prompt: int, max_output: int) -> list[dict]:
    """`n` requests, one per user turn of held-out conversations (with the reply that followed it), in corpus order
    (evaluate's request format)."""
    out = []
    for record, reason in _json_array_records(sharegpt_package_file()):
        try:
            conv_id, messages = normalise(record) if reason is None else (None, [])
        except Malformed:                        # what ingest quarantines
            continue
        if not conv_id or not in_test_split(conv_id, fraction):
            continue
        for user, reply in zip(messages, messages[1:]):
            if user["role"] != "user" or reply["role"] != "assistant":
                continue
            prompt = tokenizer.decode(tokenizer(user["content"], add_special_tokens=False)["input_ids"][:max_prompt])
            request = bench_request(tokenizer, prompt, reply["content"], max_output)
            if request:
                out.append(request)
            if len(out) == n:
                return out
    raise ValueError(f"only {len(out)} held-out exchanges found, {n} asked for")


def run_vllm(model_dir: Path, requests: list[dict], concurrency: int, cfg, work: Path) -> dict:
    with VLLMServer(cfg.vllm, model_dir) as server:
        r = bench_serve(server, requests, concurrency, model_dir, work / "vllm.json")
    return {"completed": r["completed"], "failed": r["failed"], "wall_s": r["duration"],
            "requests_per_s": r["request_throughput"], "output_tokens_per_s": r["output_throughput"],
            "ttft_ms": (r["median_ttft_ms"], r["p99_ttft_ms"]), "tpot_ms": (r["median_tpot_ms"], r["p99_tpot_ms"]),
            "e2e_s": (r["median_e2el_ms"] / 1000, r["p99_e2el_ms"] / 1000), "prometheus": r["prometheus"]}


class StepClock:
    """A `generate` streamer that only notes when each decoding step produced its tokens."""

    def __init__(self):
        self.steps: list[float] = []

    def put(self, value) -> None:
        self.steps.append(time.perf_counter())

    def end(self) -> None:
        pass


def run_transformers(model_dir: Path, requests: list[dict], batch: int, dtype: str) -> dict:
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32 if dtype == "float32" else "auto").eval()
    ttft, tpot, e2e = [], [], []
    t0 = time.perf_counter()
    for i in tqdm(range(0, len(requests), batch), desc="transformers generate", unit="batch"):
        chunk = requests[i:i + batch]
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": r["conversations"][0]["value"]}],
                                               tokenize=False,
                                               add_generation_prompt=True) for r in chunk]
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        longest, clock = max(r["output_tokens"] for r in chunk), StepClock()
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=longest, min_new_tokens=longest, do_sample=False,
                           streamer=clock, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
        steps = clock.steps[1:]                  # the first put() is the prompt itself
        for r in chunk:
            done = steps[r["output_tokens"] - 1]
            ttft.append(steps[0] - start)
            e2e.append(done - start)
            tpot.append((done - steps[0]) / (r["output_tokens"] - 1))
    wall = time.perf_counter() - t0
    p = lambda xs, scale=1.0: (float(np.percentile(xs, 50)) * scale, float(np.percentile(xs, 99)) * scale)  # noqa
    return {"completed": len(requests), "failed": 0, "wall_s": wall, "requests_per_s": len(requests) / wall,
            "output_tokens_per_s": sum(r["output_tokens"] for r in requests) / wall, "ttft_ms": p(ttft, 1000),
            "tpot_ms": p(tpot, 1000), "e2e_s": p(e2e)}


def table(results: dict[str, dict]) -> str:
    rows = ["| engine | done | failed | wall s | req/s | out tok/s | TTFT p50 / p99 ms | TPOT p50 / p99 ms | "
            "e2e p50 / p99 s |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in results.items():
        rows.append(f"| {name} | {r['completed']} | {r['failed']} | {r['wall_s']:.0f} | {r['requests_per_s']:.2f} | "
                    f"{r['output_tokens_per_s']:.0f} | {r['ttft_ms'][0]:.0f} / {r['ttft_ms'][1]:.0f} | "
                    f"{r['tpot_ms'][0]:.1f} / {r['tpot_ms'][1]:.1f} | {r['e2e_s'][0]:.2f} / {r['e2e_s'][1]:.2f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-prompt-tokens", type=int, default=512)
    parser.add_argument("--max-output", type=int, default=64)
    parser.add_argument("--model", type=Path, help="an HF checkpoint; default: the pipeline's base model, converted "
                        "into .cache/bench/base when the pipeline has not run")
    parser.add_argument("--out", type=Path, default=Path(".cache/bench/serving.json"))
    args = parser.parse_args()
    cfg = load_config()
    apply_runtime_env(cfg)
    model_dir = args.model or (Paths.base_model if (Paths.base_model / "config.json").exists()
                               else Path(".cache/bench/base"))
    if not (model_dir / "config.json").exists():
        from tasks.train.base_model import prepare_base_model
        prepare_base_model(cfg.base_model, model_dir)
    from transformers import AutoTokenizer

    requests = held_out_requests(AutoTokenizer.from_pretrained(model_dir), args.requests,
                                 cfg.datasets.test_fraction, args.max_prompt_tokens, args.max_output)
    dtype = serving_dtype(cfg.vllm.dtype)
    lengths = [r["output_tokens"] for r in requests]
    print(f"{len(requests)} held-out requests, output tokens p50 {np.median(lengths):.0f} / max {max(lengths)}, "
          f"concurrency {args.concurrency}, vLLM --dtype {dtype} and the same weights in transformers; "
          f"{hardware_tags()['hw.cpu']} [{hardware_tags()['hw.cpu_flags']}]", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        results = {"vLLM (continuous batching)": run_vllm(model_dir, requests, args.concurrency, cfg, Path(tmp))}
    results["HF generate (static batches)"] = run_transformers(model_dir, requests, args.concurrency, dtype)
    vllm, hf = results.values()
    print(table(results))
    print(f"vLLM / HF: {vllm['requests_per_s'] / hf['requests_per_s']:.1f}x requests/s, "
          f"{vllm['output_tokens_per_s'] / hf['output_tokens_per_s']:.1f}x output tokens/s, "
          f"e2e p50 {hf['e2e_s'][0] / vllm['e2e_s'][0]:.1f}x lower, "
          f"TTFT p50 {hf['ttft_ms'][0] / vllm['ttft_ms'][0]:.1f}x lower")
    print("vLLM's own /metrics over the run:", json.dumps(vllm["prometheus"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"requests": len(requests), "concurrency": args.concurrency, "dtype": dtype,
                                    **hardware_tags(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
