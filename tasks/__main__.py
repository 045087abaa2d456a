"""`python -m tasks STAGE [--params params.yaml]`: run one stage, as `dvc repro` does (see dvc.yaml).

`python -m tasks promote VERSION` and `python -m tasks rollback` move `@champion` by hand (tasks/release/promote.py).
`python -m tasks lineage [models:/NAME@champion | VERSION] [--check]` prints what made a registered model
(tasks/ops/lineage.py); `python -m tasks retrain-check` says which stages are stale and why
(tasks/ops/retrain_check.py).

Also the entry point under `accelerate launch --config_file infra/accelerate/<fsdp|deepspeed_zero3>.yaml -m tasks sft`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from tasks.config import TELEMETRY_OFF, apply_runtime_env, load_config


def main() -> None:
    for key, value in TELEMETRY_OFF.items():   # before any command imports mlflow, dvc or transformers
        os.environ.setdefault(key, value)
    if sys.argv[1:2] in (["promote"], ["rollback"]):
        from tasks.release.promote import main as move_champion
        sys.exit(move_champion(sys.argv[1], sys.argv[2:]))
    if sys.argv[1:2] == ["lineage"]:
        from tasks.ops.lineage import main as lineage
        sys.exit(lineage(sys.argv[2:]))
    if sys.argv[1:2] == ["retrain-check"]:
        from tasks.ops.retrain_check import main as retrain_check
        sys.exit(retrain_check(sys.argv[2:]))
    from tasks.stages import BY_NAME

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", choices=list(BY_NAME))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    cfg = load_config(args.params)
    apply_runtime_env(cfg)
    if int(os.environ.get("RANK", "0")):       # under `accelerate launch`: every rank trains, rank 0 records
        BY_NAME[args.stage].run(cfg)
        return

    from tasks import tracking
    from tasks.stages import run_stage

    parent = tracking.start_pipeline(cfg, launcher="dvc")
    try:
        metrics = run_stage(cfg, BY_NAME[args.stage], parent)
    except BaseException:
        tracking.end_pipeline(parent, "FAILED")
        raise
    tracking.end_pipeline(parent)
    print(json.dumps(metrics, indent=2, default=str))


if __name__ == "__main__":
    main()
