"""A change to any code a stage runs makes `python -m tasks retrain-check` (the CI retraining decision) name that stage
and what runs after it, on the pipeline project the e2e test made: dvc.yaml's code deps are followed from imports,
not typed by hand. A clone without the cached outputs answers the same (absent outputs are no reason to run)."""
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

SKIP = ("data/models", "data/ingested", "data/clean", "data/datasets", "data/pairs", ".dvc/cache", "mlruns",
        ".prefect", ".serve-logs", ".cache", ".checkpoints")


@pytest.fixture(scope="module")
def clone(project, tmp_path_factory):
    """The project's code, params, dvc.yaml, dvc.lock and the small outputs kept in git, as a clone has them."""
    proj, env, _ = project
    dest = tmp_path_factory.mktemp("clone") / "project"
    shutil.copytree(proj, dest, ignore=lambda d, names: [n for n in names if f"{d}/{n}".removeprefix(f"{proj}/")
                                                          in SKIP or n == "__pycache__"])
    return dest, env


def retrain_check(clone) -> tuple[int, str]:
    root, env = clone
    done = subprocess.run([sys.executable, "-m", "tasks", "retrain-check"], cwd=root, env=env, capture_output=True,
                          text=True)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    return done.returncode, done.stdout


def stale(out: str) -> list[str]:
    return [line.split(":")[0] for line in out.splitlines() if line.endswith(": stale")]


@pytest.mark.parametrize(("module", "expected"), [
    ("tasks/tracking.py", "all"),                 # the runner's: every stage runs through it
    ("tasks/common/hardware.py", "all"),          # imported by tracking (hardware tags), and picks the served dtype
    ("tasks/config/evaluate.py", "all"),          # every stage validates the whole params.yaml
    ("tasks/release/promote.py", ["register"]),   # imported by register.py only
    ("tasks/evaluate/judge.py", ["evaluate"]),
    ("tasks/data/filters/toxicity_blocklist.txt", ["clean"]),   # a data file the code reads, not an import
    ("tasks/serve/serve_bench.py", ["evaluate"]),       # run as `python -m tasks.serve.serve_bench`
    ("tasks/serve/swap.py", []),                  # `make serve` only: no stage runs it
])
def test_a_one_line_change_to_code_a_stage_runs_makes_it_stale(clone, module, expected):
    root, _ = clone
    from tasks.stages import STAGES

    code, out = retrain_check(clone)
    assert code == 0 and "nothing to do" in out, out
    path = root / module
    original = path.read_bytes()
    path.write_bytes(original + b"\n# a one-line change\n")
    try:
        code, out = retrain_check(clone)
    finally:
        path.write_bytes(original)
    names = [s.name for s in STAGES] if expected == "all" else expected
    assert stale(out) == names, out
    assert code == (1 if names else 0)
    for name in names:
        assert f"  - {module}: modified" in out.split(f"{name}: stale")[1].split(": stale")[0], out
    if names and names[-1] != STAGES[-1].name:   # what comes after re-runs if the outputs change, and is said so
        assert f"register: runs after {names[-1]}" in out or f"register: runs after {', '.join(names)}" in out, out
