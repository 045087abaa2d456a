"""`python -m tasks retrain-check [STAGE ...]` (`make retrain-check`): which stages are stale against dvc.lock, and
why. The retraining workflow (.github/workflows/retrain.yml) takes its decision from the exit code:

  0  nothing to do: every stage's command, code, params and present data match dvc.lock
  1  stages to run: each is listed with the command, file or param (old -> new) that changed
  2  cannot tell: not a DVC project, dvc.yaml or params.yaml broken

Stale means what `dvc repro --allow-missing` would run. An output or data dependency that dvc.lock records but that is
absent is not a reason: data/ingested (the raw corpus with its PII) is never pushed, so no clone can pull it, and a
clone that has not pulled at all must get the same answer. Code and params are in git, so a fresh clone answers
before `dvc pull`. A missing file still counts when the stage that makes it recorded another version of it than the
stage that reads it (a `.dvc` data source was updated, or an upstream stage re-ran alone): that is DVC's own rule.
Stages downstream of a stale one are listed as running after it: they re-run if its outputs change. With an ingest
source of kind feedback, ingest is also stale when `make serve` recorded flywheel.min_new_rows rows of feedback since
the last round (tasks/data/feedback.py): the run closes them into a round before its first stage.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ABSENT = ("deleted", "not in cache")     # recorded in dvc.lock, not in the workspace: not a reason to run


@dataclass(frozen=True)
class Verdict:
    stage: str
    reasons: tuple[str, ...]     # why it must run; empty when it need not
    after: tuple[str, ...]       # stale stages upstream: it re-runs if their outputs change


def _flat(params: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        flat.update(_flat(value, f"{name}.") if isinstance(value, dict) else {name: value})
    return flat


def param_changes(locked: dict, actual: dict) -> list[str]:
    """Leaf-level differences: dvc.lock stores a tracked section whole, and `ingest: modified` would not say which
    setting moved."""
    old, new = _flat(locked), _flat(actual)

    def shown(values: dict, key: str) -> str:
        return repr(values[key]) if key in values else "(none)"

    return [f"{key}: {shown(old, key)} -> {shown(new, key)}" for key in sorted(old.keys() | new.keys())
            if key not in old or key not in new or old[key] != new[key]]


def _dep_reasons(dep, producers: dict[str, Any]) -> list[str]:
    from dvc.dependency import ParamsDependency

    if isinstance(dep, ParamsDependency):
        if not dep.status():
            return []
        return [f"{dep}: {change}" for change in param_changes(dep.hash_info.value or {}, dep.read_params())]
    state = dep.status().get(str(dep))
    if state is None:
        return []
    if state == "deleted":
        made = producers.get(dep.fs_path)
        if made is None or made.hash_info == dep.hash_info:
            return []
        return [f"{dep}: {made.stage.addressing} recorded another version than dvc.lock has for this stage"]
    return [f"{dep}: {state}"]


def reasons(stage, producers: dict[str, Any]) -> list[str]:
    """Why `stage` must run, in words; [] when its command, code, params and present data match dvc.lock."""
    from dvc.stage import PipelineStage

    if stage.frozen:
        return []
    if isinstance(stage, PipelineStage) and stage.name not in stage.dvcfile.lockfile_contents.get("stages", {}):
        return ["never run: not in dvc.lock"]
    why = ["always_changed: true"] if stage.always_changed else []
    if isinstance(stage, PipelineStage) and stage.cmd_changed:
        why.append(f"command changed: {stage.cmd}")
    for dep in stage.deps:
        why += _dep_reasons(dep, producers)
    for out in stage.outs:
        state = out.status().get(str(out))
        if state is not None and state not in ABSENT:
            why.append(f"output {out}: {state} (not what dvc.lock recorded)")
    return why


def feedback_due(root: Path) -> str:
    """Ingest runs again when feedback for a new round is due (tasks/data/feedback.py): the served model's users said
    enough since the last round, though no file DVC watches changed yet (the run cuts the round first)."""
    from tasks.config import load_config
    from tasks.data.feedback import due
    from tasks.paths import Paths

    cfg = load_config(root / "params.yaml")
    if not any(source.kind == "feedback" for source in cfg.ingest.sources):
        return ""
    return due(cfg.flywheel.min_new_rows, root / Paths.feedback_live)


def check(root: Path, targets: Sequence[str] = ()) -> list[Verdict]:
    """Every stage `dvc repro TARGETS` would consider (all of dvc.yaml by default), upstream first."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    with Repo(str(root)) as repo:
        graph = get_active_graph(repo.index.graph)
        plan = plan_repro(graph, collect_stages(repo, list(targets) or ["dvc.yaml"]))
        producers = {out.fs_path: out for stage in graph for out in stage.outs}
        why = {stage: reasons(stage, producers) for stage in plan}
        for stage in plan:
            if stage.addressing == "ingest" and (feedback := feedback_due(root)):
                why[stage].append(feedback)
        return [Verdict(stage.addressing, tuple(why[stage]),
                        tuple(up.addressing for up in plan if up in nx.descendants(graph, stage) and why[up]))
                for stage in plan]


def render(verdicts: list[Verdict]) -> str:
    lines = []
    for v in verdicts:
        if v.reasons:
            lines += [f"{v.stage}: stale"] + [f"  - {r}" for r in v.reasons]
        elif v.after:
            lines.append(f"{v.stage}: runs after {', '.join(v.after)} if its outputs change")
    stale = [v.stage for v in verdicts if v.reasons]
    if stale:
        lines.append(f"stale: {', '.join(stale)} -> run the pipeline")
    else:
        lines.append(f"nothing to do: {len(verdicts)} stages match dvc.lock (outputs never pushed or not pulled, "
                     "like data/ingested, are no reason to run)")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks retrain-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="*", help="check these stages and what they depend on (default: all)")
    parser.add_argument("--root", type=Path, default=Path("."), help="the DVC project (default: here)")
    args = parser.parse_args(argv)
    try:
        verdicts = check(args.root, args.stages)
    except Exception as exc:  # noqa: BLE001 - any failure must read as "cannot tell" (2), never as "stale" (1)
        print(f"retrain-check: cannot tell: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(render(verdicts))
    return 1 if any(v.reasons for v in verdicts) else 0
