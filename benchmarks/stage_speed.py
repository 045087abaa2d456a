"""Measured reasons behind two defaults, each against its baseline in the same run:

1. CPU training precision: SFT steps with bf16 autocast (AMX) vs fp32, same data, same steps.
2. Rejected-reply sampling for the preference pairs: transformers `generate` (the pairs stage) vs a vLLM server
   (incl. its start-up).

Run after the pipeline has built data/ (`make pipeline`):  .venv/bin/python -m benchmarks.stage_speed
"""
from __future__ import annotations

import itertools
import os
import time
from pathlib import Path

from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_model, load_tokenizer
from tasks.config import PairsConfig, VllmConfig, apply_runtime_env, changed, load_config
from tasks.paths import Paths
from tasks.train import training


def sft_steps(bf16: bool, steps: int, tmp: Path) -> tuple[float, float]:
    from tasks.train.sft import build_trainer

    training.use_bf16 = lambda: bf16
    trainer = build_trainer(changed(load_config().sft, max_steps=steps, max_length=256, eval_steps=10_000, logging_steps=1), 0,
                            Paths.base_model, Paths.sft_train, Paths.sft_test, tmp)
    t0 = time.perf_counter()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return (time.perf_counter() - t0) / steps, losses[-1]


def generate_transformers(prompts: list[list[dict]], lengths: list[int], cfg: PairsConfig) -> float:
    """What the pairs stage does: the SFT model, seeded, each reply sampled to its chosen reply's length."""
    from tasks.train.pairs import sample_to_length

    tokenizer = load_tokenizer(Paths.base_model)
    t0 = time.perf_counter()
    model = load_model(Paths.base_model, adapter=Paths.sft_adapter).merge_and_unload()
    sample_to_length(model, tokenizer, prompts, lengths, cfg, seed=0)
    return time.perf_counter() - t0


def generate_vllm(prompts: list[list[dict]], lengths: list[int], vllm_cfg: VllmConfig) -> float:
    """The alternative: a vLLM server (start-up included), the same token budget per request. It serves the base
    model here; the SFT adapter would need merging and saving first, which this leaves out in vLLM's favour."""
    from tasks.common.vllm_server import VLLMServer

    t0 = time.perf_counter()
    with VLLMServer(vllm_cfg, Paths.base_model) as server:
        server.chat_many(prompts, 32, max_tokens=max(lengths), min_tokens=min(lengths), temperature=0.7, top_p=0.9)
    return time.perf_counter() - t0


def main() -> None:
    cfg = load_config()
    apply_runtime_env(cfg)
    tmp = Path(os.environ.get("BENCH_TMP", "/tmp/stage_speed"))
    steps = int(os.environ.get("BENCH_STEPS", "6"))
    fp32, bf16 = sft_steps(False, steps, tmp / "fp32"), sft_steps(True, steps, tmp / "bf16")
    pairs = list(itertools.chain(read_jsonl(Paths.pref_train), read_jsonl(Paths.pref_test)))
    prompts = [p["prompt"] for p in pairs]
    tokenizer = load_tokenizer(Paths.base_model)
    lengths = [len(tokenizer(p["chosen"][0]["content"], add_special_tokens=False)["input_ids"]) for p in pairs]
    hf = generate_transformers(prompts, lengths, cfg.pairs)
    vllm = generate_vllm(prompts, lengths, cfg.vllm)
    print(f"\n{'comparison':<46}{'baseline':>14}{'this project':>14}{'speed-up':>10}")
    print(f"{f'SFT s/step ({steps} steps, batch 4, <=256 tok)':<46}{fp32[0]:>11.2f} s{bf16[0]:>11.2f} s"
          f"{fp32[0] / bf16[0]:>9.2f}x   (fp32 -> bf16 autocast; last loss {fp32[1]:.3f} vs {bf16[1]:.3f})")
    print(f"{f'rejected replies ({len(prompts)} prompts)':<46}{vllm:>11.1f} s{hf:>11.1f} s{vllm / hf:>9.2f}x   "
          "(vLLM incl. start-up -> transformers generate, seeded)")


if __name__ == "__main__":
    main()
