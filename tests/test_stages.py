"""The stage list is the one declaration: dvc.yaml is generated from it, each stage's code deps are what it runs, and
its params are exactly what its adapter reads. Fast: nothing here trains or serves."""
import ast
import inspect
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks.common import code_deps
from tasks.config import Config, changed, load_config
from tasks.ops.dvc_yaml import generate
from tasks.stages import STAGES
from tests.conftest import ROOT

ADAPTERS = [s.run.__name__ for s in STAGES]


def test_the_committed_dvc_yaml_is_what_the_stage_list_generates():
    assert (ROOT / "dvc.yaml").read_text() == generate(), "run: python -m tasks dvc-yaml"
    done = subprocess.run([sys.executable, "-m", "tasks", "dvc-yaml", "--check"], cwd=ROOT, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_ingest_depends_on_its_sources_in_the_project_and_on_no_other(tmp_path):
    """So that editing data/raw/mine.jsonl re-runs ingest under `dvc repro`; the embedded package, a hub dataset and
    a file outside the project are not files of the project."""
    (tmp_path / "data/raw/saved").mkdir(parents=True)
    for name in ("mine.jsonl", "other.json.gz"):
        (tmp_path / "data/raw" / name).write_text("")
    sources = ["data/raw/mine.jsonl", str(tmp_path / "data/raw/other.json.gz"), "data/raw/saved", "sharegpt-package",
               "tatsu-lab/alpaca", "/etc/hostname", "../outside.jsonl"]
    cfg = changed(load_config(ROOT / "params.yaml"), ingest={"sources": [{"path": path} for path in sources]})
    ingest = next(s for s in STAGES if s.name == "ingest")
    assert ingest.named_deps(cfg, tmp_path) == [Path("data/raw/mine.jsonl"), Path("data/raw/other.json.gz"),
                                                 Path("data/raw/saved")]
    assert "data/raw" not in generate()          # the default's one source is the embedded package


def _module(path) -> str:
    rel = path.relative_to(code_deps.ROOT).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_every_module_a_stage_imports_is_one_of_its_deps(stage):
    """Python's own import machinery, in a fresh interpreter, against the deps read from the source: importing the
    CLI, the runner and what the stage's adapter imports loads only files its dvc.yaml entry lists."""
    runner = code_deps.ROOT / inspect.getsourcefile(stage.run)
    direct = code_deps._imported_by(runner, stage.run.__name__)
    code = textwrap.dedent(f"""
        import importlib, json, sys
        import tasks.__main__, {_module(runner)}
        for name in {sorted(_module(p) for p in direct if p.suffix == ".py")!r}:
            importlib.import_module(name)
        print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items()
                                if n.split(".")[0] == "tasks" and getattr(m, "__file__", None))))""")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = {str(code_deps.Path(f).resolve().relative_to(code_deps.ROOT)) for f in json.loads(done.stdout)}
    loaded = {f for f in loaded if not f.endswith("__init__.py") or (ROOT / f).read_text().strip()}
    declared = set(code_deps.stage_code(stage, ADAPTERS))
    assert loaded - declared == set()
    assert {"tasks/config/__init__.py", "tasks/config/data.py", "tasks/tracking.py", "tasks/stages.py", "tasks/cli.py"} <= declared


def test_code_deps_follow_function_level_imports_and_files_named_in_the_code():
    deps = {s.name: set(code_deps.stage_code(s, ADAPTERS)) for s in STAGES}
    assert "tasks/release/promote.py" in deps["register"]          # imported inside register's module
    assert "tasks/common/hardware.py" in deps["evaluate"] and "tasks/common/hardware.py" in deps["smoke_test"]
    assert "tasks/serve/serve_bench.py" in deps["evaluate"]        # run as `python -m tasks.serve.serve_bench`
    assert "tasks/common/reaper.py" in deps["smoke_test"]          # Path(__file__).with_name("reaper.py")
    assert "tasks/data/filters/toxicity_blocklist.txt" in deps["clean"]
    assert "tasks/evaluate/judge.py" not in deps["clean"]          # another stage's adapter is not followed
    assert not any("tasks/ops/" in d or d == "tasks/serve/serve_registry.py" for ds in deps.values() for d in ds)


def _reads(stage) -> set[str]:
    """The dotted config keys the adapter's source reads from its `cfg` argument, cut where the schema ends."""
    fn = ast.parse(textwrap.dedent(inspect.getsource(stage.run))).body[0]
    arg, reads = fn.args.args[0].arg, set()
    inner = {id(n.value) for n in ast.walk(fn) if isinstance(n, ast.Attribute)}   # cfg.a inside cfg.a.b
    for node in ast.walk(fn):
        if id(node) in inner:
            continue
        chain = []
        while isinstance(node, ast.Attribute):
            chain.insert(0, node.attr)
            node = node.value
        if not (isinstance(node, ast.Name) and node.id == arg and chain):
            continue
        model, key = Config, []
        for part in chain:
            if not (isinstance(model, type) and part in model.model_fields):
                break
            key.append(part)
            model = model.model_fields[part].annotation
        reads.add(".".join(key))
    return {k for k in reads if not any(k.startswith(f"{other}.") for other in reads)}   # evaluate covers its keys


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s.name)
def test_a_stage_declares_exactly_the_params_its_adapter_reads(stage):
    assert _reads(stage) == set(stage.params)


def test_the_import_graph_has_no_cycles():
    """Module-level and function-level imports alike, across tasks/ and flows/ (files named as strings are read or
    run, not imported: they are deps, not edges here)."""
    import networkx as nx

    files = sorted((ROOT / "tasks").rglob("*.py")) + sorted((ROOT / "flows").rglob("*.py"))
    graph = nx.DiGraph()
    for path in files:
        graph.add_node(path)
        graph.add_edges_from((path, dep) for dep in code_deps.references(path, named=False) if dep.suffix == ".py" and dep != path)
    cycles = [[str(p.relative_to(ROOT)) for p in cycle] for cycle in nx.simple_cycles(graph)]
    assert cycles == []


def test_writing_dvc_yaml_drops_lock_entries_of_stages_that_are_gone(tmp_path):
    """DVC keeps a renamed stage's dvc.lock entry (the old `deploy`), whose md5s would be recorded on every version."""
    import yaml

    from tasks.ops.dvc_yaml import prune_lock

    lock = tmp_path / "dvc.lock"
    lock.write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "clean": {"cmd": "python -m tasks run clean"},
        "deploy": {"cmd": "python -m tasks deploy", "outs": [{"path": "data/deploy/deployment.json", "md5": "c5"}]}}}))
    assert prune_lock(lock, [s.name for s in STAGES]) == ["deploy"]
    assert yaml.safe_load(lock.read_text()) == {"schema": "2.0", "stages": {"clean": {"cmd": "python -m tasks run clean"}}}
    assert prune_lock(lock, [s.name for s in STAGES]) == []
