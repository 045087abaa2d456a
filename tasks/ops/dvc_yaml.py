"""dvc.yaml, generated from the stage list (tasks/stages.py): `python -m tasks dvc-yaml [--check]`.

Each stage's params, data deps, outs and plots are its declaration, with the data its params name (ingest's sources
in the project, read from params.yaml); its code deps are the files its command runs (tasks/common/code_deps.py);
its results and headline files (data/stages/, data/metrics/) are the runner's. The file is committed, so `dvc repro`
and `dvc status` work without this package, and tests/test_stages.py fails when the committed file is not what the
stage list generates. Writing it also drops dvc.lock's entries for stages that are
gone, which DVC itself keeps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from tasks.common.code_deps import ROOT, stage_code
from tasks.config import Config, load_config
from tasks.stages import STAGES, Out, Stage

HEADER = """\
# Generated from tasks/stages.py by `python -m tasks dvc-yaml`: edit the stage list, not this file.
# Every stage runs `python -m tasks run STAGE`, the same runner the Prefect flow (flows/pipeline.py) calls. Its deps
# are the code it runs (followed from its imports) and the data it reads; its params are the keys it reads.
# data/metrics/<stage>.json: each stage's headline numbers (`dvc metrics show/diff`); data/stages/<stage>.json:
# everything it returned. data/ingested holds the raw corpus with its PII: `dvc push` leaves it out (push: false).
"""


def _out(out: Out):
    options = {k: v for k, v in (("cache", out.cache), ("push", out.push)) if not v}
    return {str(out.path): options} if options else str(out.path)


def stage_entry(stage: Stage, adapters: list[str], cfg: Config) -> dict:
    outs = [*stage.outs, Out(stage.results_file, cache=False)]
    named = stage.named_deps(cfg, ROOT) if stage.named_deps else []
    entry = {"cmd": f"python -m tasks run {stage.name}",
             "deps": stage_code(stage, adapters) + [str(p) for p in [*stage.deps, *named]],
             "params": list(stage.params),
             "outs": [_out(o) for o in outs],
             "metrics": [{str(stage.metrics_file): {"cache": False}}]}
    if stage.plots:
        entry["plots"] = [{str(p): {"cache": False}} for p in stage.plots]
    return entry


def stages(cfg: Config) -> dict[str, dict]:
    adapters = [s.run.__name__ for s in STAGES]
    return {s.name: stage_entry(s, adapters, cfg) for s in STAGES}


def _item(value) -> str:
    """One list entry, written as DVC's own docs write them: `- path` or `- path: {cache: false}`."""
    if isinstance(value, str):
        return value
    (path, options), = value.items()
    return f"{path}: {{{', '.join(f'{k}: {str(v).lower()}' for k, v in options.items())}}}"


def generate(params: Path = ROOT / "params.yaml") -> str:
    entries = stages(load_config(params))
    lines = [HEADER.rstrip("\n"), "stages:"]
    for name, entry in entries.items():
        lines += [f"  {name}:", f"    cmd: {entry['cmd']}"]
        for key in ("deps", "params", "outs", "metrics", "plots"):
            if key in entry:
                lines += [f"    {key}:"] + [f"      - {_item(v)}" for v in entry[key]]
    text = "\n".join(lines) + "\n"
    assert yaml.safe_load(text)["stages"] == entries, "the dvc.yaml writer lost something"
    return text


def prune_lock(lock: Path, names: list[str]) -> list[str]:
    """Drop dvc.lock's entries for stages the stage list no longer has (a renamed or removed stage): DVC keeps them,
    and their md5s would go on registering versions as data that made them. Returns the names dropped."""
    if not lock.exists():
        return []
    locked = yaml.safe_load(lock.read_text()) or {}
    gone = [name for name in locked.get("stages", {}) if name not in names]
    if gone:
        for name in gone:
            del locked["stages"][name]
        lock.write_text(yaml.safe_dump(locked, sort_keys=False))
    return gone


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks dvc-yaml", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml is not what the stage list makes")
    parser.add_argument("--out", type=Path, default=ROOT / "dvc.yaml")
    args = parser.parse_args(argv)
    text = generate()
    if args.check:
        same = args.out.exists() and args.out.read_text() == text
        print(f"{args.out}: {'as generated' if same else 'differs from the stage list: run python -m tasks dvc-yaml'}",
              file=sys.stdout if same else sys.stderr)
        return 0 if same else 1
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(STAGES)} stages)")
    gone = prune_lock(args.out.with_name("dvc.lock"), [s.name for s in STAGES])
    if gone:
        print(f"dropped from dvc.lock, no longer stages: {', '.join(gone)}")
    return 0
