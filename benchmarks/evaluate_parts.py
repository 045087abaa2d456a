"""Where the evaluate stage's time goes, part by part, against the split the last pipeline run recorded.

Run after `make pipeline` has built data/:  .venv/bin/python -m benchmarks.evaluate_parts
It runs the real stage on params.yaml (both servers, when a champion is registered) into a scratch folder, so
data/eval keeps the pipeline's own figures, and prints both splits side by side with each part's share.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from tasks import tracking
from tasks.config import apply_runtime_env, load_config
from tasks.paths import Paths


def main() -> None:
    cfg = load_config()
    apply_runtime_env(cfg)
    tracking.configure(cfg.tracking)     # to find the champion; nothing is logged (no run is open)
    recorded = json.loads(Paths.metrics.read_text()).get("time_s", {}) if Paths.metrics.exists() else {}
    from tasks.data.canaries import make_canaries
    from tasks.evaluate.evaluate import evaluate

    out = Path(os.environ.get("BENCH_TMP", "/tmp/evaluate_parts"))
    canaries = make_canaries(cfg.evaluate.canaries, cfg.runtime.seed)
    now = evaluate(cfg.evaluate, cfg.vllm, cfg.tracking.registered_model, canaries, cfg.runtime.seed,
                   out_dir=out)["time_s"]
    total = sum(now.values())
    print(f"\n{'part':<44}{'last pipeline run':>18}{'this run':>10}{'share':>8}")
    for part, seconds in now.items():
        before = f"{recorded[part]:.1f} s" if part in recorded else "-"
        print(f"{part:<44}{before:>18}{seconds:>8.1f} s{seconds / total:>7.0%}")
    print(f"{'total':<44}{sum(recorded.values()):>16.1f} s{total:>8.1f} s")


if __name__ == "__main__":
    main()
