"""What the RLHF path costs against DPO on this machine: seconds per optimizer step and peak memory of the reward
model, GRPO and RLOO, each beside DPO's, on the same prompts (the pairs stage's), the same SFT adapter and params.yaml.

Each method trains `--steps` steps in a fresh process (peak memory is its own; checkpoints off). s/step is the
trainer's own runtime over its steps (model loading left out). What a step holds differs, and the table says it: a
DPO step is `per_device_batch_size` pairs; a GRPO/RLOO step is `per_device_batch_size` sampled replies
(`num_generations` per prompt) plus their scoring by the reward model.

  .venv/bin/python -m benchmarks.align_cost [--steps 4]          # after `make pipeline` (needs data/models/reward)
"""
from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

from tasks.config import apply_runtime_env, changed, load_config
from tasks.paths import Paths

METHODS = ("dpo", "reward", "grpo", "rloo")


def run(method: str, steps: int) -> dict:
    from tasks.train.dpo import dpo
    from tasks.train.reward import train_reward_model

    cfg = load_config("params.yaml")
    apply_runtime_env(cfg)
    section = cfg.reward if method == "reward" else changed(cfg.dpo, method=method)
    section = changed(section, max_steps=steps, save_steps=0, logging_steps=1)
    with tempfile.TemporaryDirectory() as tmp:
        if method == "reward":
            found = train_reward_model(section, cfg.runtime.seed, out_dir=Path(tmp) / "out",
                                       checkpoint_root=Path(tmp) / "ckpt")
        else:
            found = dpo(section, cfg.runtime.seed, out_dir=Path(tmp) / "out", checkpoint_root=Path(tmp) / "ckpt")
    batch = cfg.reward.per_device_batch_size if method == "reward" else cfg.dpo.per_device_batch_size
    what = (f"{batch} pairs" if method in ("dpo", "reward") else
            f"{batch} replies ({batch // cfg.dpo.num_generations} prompts x {cfg.dpo.num_generations}, "
            f"{cfg.dpo.max_completion_length} tokens)")
    return {"method": method, "s_per_step": round(found["train_runtime_s"] / found["steps"], 2),
            "peak_mem_mb": found["peak_mem_mb"], "step holds": what}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    if not (Paths.reward_model / "config.json").exists():
        raise SystemExit(f"{Paths.reward_model} is missing: run `make pipeline` first")
    rows = []
    for method in METHODS:      # one at a time: two trainings side by side would share the cores
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            rows.append(pool.submit(run, method, args.steps).result())
    dpo = rows[0]
    print(f"\n{args.steps} steps each, params.yaml settings\n")
    print("| method | s/step | x DPO | peak memory MB | x DPO | a step holds |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['method']} | {r['s_per_step']} | {r['s_per_step'] / dpo['s_per_step']:.2f} | "
              f"{r['peak_mem_mb']:,.0f} | {r['peak_mem_mb'] / dpo['peak_mem_mb']:.2f} | {r['step holds']} |")


if __name__ == "__main__":
    main()
