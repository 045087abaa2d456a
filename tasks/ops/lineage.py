"""What made a registered model: `python -m tasks lineage [models:/NAME@ALIAS | models:/NAME/N | N] [--check] [--json]`.

Prints the chain: the registry version (alias, gates, git commit, params hash) → the pipeline run that registered it
→ each stage's run (git commit, params, the md5 of the DVC data it consumed and made; for a stage DVC found up to
date, the earlier run that made its outputs) → the cleaning counts, the evaluation figures, the smoke test. Read-only:
nothing is written to the MLflow store (tasks/ops/lineage_walk.py). `--check` says whether this workspace's dvc.lock
and DVC cache hold the version's data (tasks/ops/lineage_check.py), and exits 1 naming what differs when they do not.
Text for a terminal (tasks/ops/lineage_text.py), or `--json` with every id, md5, param and metric whole.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

from tasks.config import load_config


def _plain(obj):
    """Standard JSON for machines: NaN and infinite metrics become null."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return None if isinstance(obj, float) and not math.isfinite(obj) else obj


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks lineage", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?", help="models:/NAME@ALIAS, models:/NAME/VERSION or VERSION "
                                                  "(default: models:/<tracking.registered_model>@champion)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 unless this workspace's dvc.lock and DVC cache hold the version's data")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of text")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)

    # telemetry is off already (tasks/__main__.py); a download bar would break the text and --json output
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from tasks.evaluate.figures import HEADLINE
    from tasks.ops.lineage_check import check_workspace, declared_outputs
    from tasks.ops.lineage_text import render
    from tasks.ops.lineage_walk import LineageError, lineage, open_store, resolve
    from tasks.stages import STAGES

    cfg = load_config(args.params)
    try:
        client = open_store(cfg.tracking.tracking_uri)
        version = resolve(client, cfg.tracking.registered_model, args.target)
        chain = lineage(client, version, [s.name for s in STAGES], HEADLINE, declared_outputs())
    except LineageError as err:
        print(f"lineage: {err}", file=sys.stderr)
        return 2
    if args.check:
        chain["check"] = check_workspace(chain["data"], chain["registering_stage"])
    print(json.dumps(_plain(chain), indent=2, default=str) if args.json else render(chain))
    return 0 if not args.check or chain["check"]["ok"] else 1
