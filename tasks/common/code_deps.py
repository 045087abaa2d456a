"""Which files of this repository a stage's command runs: its code deps in dvc.yaml, derived from imports.

`python -m tasks run STAGE` runs tasks/__main__.py, and from there every `tasks` module it imports, at module level or
inside a function, followed transitively; in tasks/stages.py, the stage's own adapter (`_clean`) and not the other
stages'. Code also runs what it names as a string: a module started as `"-m", "tasks.serve.serve_bench"` or loaded by
name (a forkserver preload), or a file beside the module that names it (`Path(__file__).with_name("reaper.py")`, `"toxicity_blocklist.txt"`); those count,
and a named .py file is followed in turn. Read from the source as text: nothing is imported, nothing runs.
"""
from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterable
from functools import cache
from pathlib import Path

PACKAGE = "tasks"
ROOT = Path(__file__).resolve().parents[2]   # the repository: tasks/ is in it
ENTRY = ROOT / PACKAGE / "__main__.py"      # what `python -m tasks` runs
FILE_NAME = re.compile(r"[\w-]+(\.[\w-]+)+")   # reaper.py, toxicity_blocklist.txt: a bare name with an extension


def module_file(name: str) -> Path | None:
    """The file of a dotted `tasks` module or package, None for anything else."""
    if name != PACKAGE and not name.startswith(f"{PACKAGE}."):
        return None
    base = ROOT.joinpath(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    init = base / "__init__.py"
    return init if init.is_file() and init.read_text().strip() else None   # an empty package runs nothing


def _packages(path: Path) -> list[Path]:
    """The `__init__.py` files Python runs before `path` (those with code in them)."""
    inits = [d / "__init__.py" for d in path.relative_to(ROOT).parents if d.parts and d.parts[0] == PACKAGE]
    return [ROOT / p for p in inits if (ROOT / p).is_file() and (ROOT / p).read_text().strip()]


def _imported(node: ast.AST) -> Iterable[str]:
    """The dotted names an import statement can load: `from tasks.common import plots` may mean tasks.common.plots."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        yield node.module
        yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _text(node: ast.AST) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _named(node: ast.AST, path: Path) -> set[Path]:
    """The file a string constant names: a dotted `tasks` module (run as `"-m", "tasks.serve.serve_bench"`, or loaded
    as a forkserver preload) or a file beside `path`."""
    text = _text(node)
    if text and (module := module_file(text)):
        return {module}
    if not text or not FILE_NAME.fullmatch(text) or text == "__init__.py":   # packages: _packages
        return set()
    beside = path.with_name(text)
    return {beside} if beside != path and beside.is_file() else set()


def references(path: Path, skip: frozenset[str] = frozenset(), named: bool = True) -> set[Path]:
    """The repository files `path` imports, and with `named` those it names, leaving out the bodies of the functions
    in `skip`."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(n) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name in skip
               for n in ast.walk(f)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        found |= {f for name in _imported(node) if (f := module_file(name))}
        found |= _named(node, path) if named else set()
    return found


@cache
def closure(starts: tuple[Path, ...], skip: frozenset[str] = frozenset()) -> frozenset[Path]:
    """Every file reachable from `starts`; `skip` names functions of the starting files whose bodies are not read."""
    seen, todo = set(), list(starts)
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        if path.suffix == ".py":
            todo += references(path, skip if path in starts else frozenset()) | set(_packages(path))
    return frozenset(seen)


def stage_code(stage, adapters: Iterable[str]) -> list[str]:
    """A stage's code deps, as repository-relative paths in sorted order: what `python -m tasks run STAGE` runs for
    it. `adapters` are the names of every stage's adapter function, whose bodies belong to their own stages."""
    runner = Path(inspect.getsourcefile(stage.run)).resolve()
    spine = closure((ENTRY, runner), frozenset(adapters))
    own = set()
    for name in _imported_by(runner, stage.run.__name__):
        own |= closure((name,))
    return sorted(str(p.relative_to(ROOT)) for p in spine | own)


def _imported_by(path: Path, function: str) -> set[Path]:
    """What one function of `path` imports or names."""
    others = {f.name for f in ast.walk(ast.parse(path.read_text())) if isinstance(f, ast.FunctionDef)}
    return references(path, frozenset(others - {function})) - references(path, frozenset(others))
