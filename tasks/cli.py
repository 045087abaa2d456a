"""`python -m tasks COMMAND ...`: every command of the project, in one tree.

Each command is a `main(argv) -> exit code` in the module that owns the work, named here by its dotted path and
imported only when it runs: `python -m tasks run clean` loads the stage runner, not the registry tooling, so a
stage's code deps (derived from imports: tasks/common/code_deps.py) hold only the code it runs.
"""
from __future__ import annotations

import importlib
import os
import sys

from tasks.common.errors import UserError
from tasks.config import TELEMETRY_OFF

COMMANDS = {   # name: (module:function, what it does)
    "run": ("tasks.stages:main", "one stage, whatever DVC thinks of it (what dvc.yaml's commands call)"),
    "pipeline": ("flows.pipeline:main", "every stale stage in order as a Prefect flow run (make pipeline)"),
    "promote": ("tasks.release.promote:main_promote", "point @champion at a version whose gates passed"),
    "rollback": ("tasks.release.promote:main_rollback", "point @champion back at the previous champion"),
    "lineage": ("tasks.ops.lineage:main", "what made a registered model version; --check against this workspace"),
    "retrain-check": ("tasks.ops.retrain_check:main", "which stages are stale against dvc.lock, and why"),
    "push": ("tasks.ops.remote:main", "the scrubbed outputs to the DVC remote (--include-raw: the raw corpus too)"),
    "serve": ("tasks.serve.serve_registry:main", "the registry's @champion on 127.0.0.1:8000, following the alias"),
    "flywheel": ("tasks.data.feedback:main", "feedback recorded by `make serve` since the last round; cut one"),
    "dvc-yaml": ("tasks.ops.dvc_yaml:main", "write dvc.yaml from the stage list (--check: compare, write nothing)"),
}
OPTIONS = "--debug: a traceback instead of the one-line message for a mistake in params, a source or a busy workspace"


def usage() -> str:
    width = max(map(len, COMMANDS))
    return "usage: python -m tasks COMMAND [ARGS] (COMMAND --help for its own)\n\n" + "\n".join(
        f"  {name:<{width}}  {said}" for name, (_, said) in COMMANDS.items()) + f"\n\n{OPTIONS}"


def main(argv: list[str] | None = None) -> int:
    """Runs COMMAND. A mistake in what the user gave (tasks/common/errors.py: params, a source, a busy workspace) is
    one line on stderr and exit 2; `--debug` anywhere in the arguments shows its traceback instead."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    for key, value in TELEMETRY_OFF.items():   # before any command imports mlflow, dvc or transformers
        os.environ.setdefault(key, value)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"python -m tasks: no command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function = COMMANDS[argv[0]][0].split(":")
    try:
        return getattr(importlib.import_module(module), function)(argv[1:]) or 0
    except UserError as err:
        if debug:
            raise
        print(f"python -m tasks {argv[0]}: {err}", file=sys.stderr)
        return 2
