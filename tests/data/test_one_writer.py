"""One writer per workspace, and nothing left behind by a killed one: two cleans started together in one project (a
scheduled run and a hand-started `dvc repro`) used to interleave their output; a SIGKILLed clean left its worker
processes running and its temp files in data/. Real stage runs, started as dvc.yaml's commands start them."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks.common.jsonl import sweep_temp, temp_name
from tests.conftest import ROOT
from tests.small_project import small_project

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A project whose ingest has run: clean is the stage under test."""
    proj = tmp_path_factory.mktemp("one-writer")
    params = small_project(proj, sections=("ingest",))
    params["clean"]["executor"] |= {"kind": "local", "workers": 2, "chunk_mb": 0.2}   # several chunks, 2 workers
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    other = json.loads(json.dumps(params))
    other["clean"]["quality"]["min_chars"] = 400           # another run's settings: a different output
    (proj / "other.yaml").write_text(yaml.safe_dump(other))
    params["clean"]["executor"]["kind"] = "dask"            # a LocalCluster of 2 worker processes
    (proj / "dask.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-m", "tasks", "run", "ingest"], cwd=proj, env=env, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return proj, env


def start_clean(workspace, *args: str) -> subprocess.Popen:
    proj, env = workspace
    return subprocess.Popen([sys.executable, "-m", "tasks", "run", "clean", *args], cwd=proj, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_until(condition, timeout_s: float = 120, said=lambda: "timed out") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, said()
        time.sleep(0.2)


def commands(pids: list[int]) -> str:
    lines = {pid: Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:150] for pid in pids
             if Path(f"/proc/{pid}").exists()}
    return "; ".join(f"{pid}: {line!r}" for pid, line in lines.items())


def holds_lock(proj: Path) -> bool:
    lock = proj / ".workspace.lock"
    return lock.exists() and "python -m tasks run clean" in lock.read_text()


def reconciles(proj: Path) -> int:
    """The output parses line by line and has exactly the rows its report says; returns that count."""
    with open(proj / "data/clean/conversations.jsonl", encoding="utf-8") as f:   # lines end at \n only, not at
        rows = [json.loads(line) for line in f]                                 # U+2028 (str.splitlines would)
    assert len(rows) == json.loads((proj / "data/clean/report.json").read_text())["rows_kept"]
    return len(rows)


def session(sid: int) -> list[int]:
    """Processes in session `sid`: a stage started in its own session, and everything it started, reparented or not."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":   # field 6 (session) after "(comm)": index 3; zombies are gone
            pids.append(int(stat.parent.name))
    return pids


def test_a_second_clean_is_refused_naming_the_first_or_waits_for_it(workspace):
    proj, _ = workspace
    first = start_clean(workspace)
    wait_until(lambda: holds_lock(proj))
    second = start_clean(workspace, "--params", "other.yaml")
    _, said = second.communicate(timeout=120)
    assert second.returncode == 2 and "Traceback" not in said, said
    assert "is in use by python -m tasks run clean (pid" in said and f"pid {first.pid} " in said
    assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    kept_first = reconciles(proj)
    first = start_clean(workspace)
    wait_until(lambda: holds_lock(proj))
    second = start_clean(workspace, "--params", "other.yaml", "--wait", "600")   # asked to wait: runs after it
    assert first.wait(timeout=600) == 0 and second.wait(timeout=600) == 0, second.stderr.read()[-3000:]
    assert reconciles(proj) < kept_first      # the second run's output (longer conversations only), whole


@pytest.mark.parametrize("params, started_by, processes", [
    ("params.yaml", "multiprocessing.forkserver", 3),    # the forkserver and the 2 workers it forked
    ("dask.yaml", "multiprocessing.spawn", 2)])          # 2 Dask workers
def test_a_killed_clean_leaves_no_process_and_its_temp_files_go_at_the_next_start(workspace, params, started_by,
                                                                                   processes):
    proj, _ = workspace
    stage = start_clean(workspace, "--params", params)
    wait_until(lambda: commands(session(stage.pid)).count(started_by) >= processes)
    os.kill(stage.pid, signal.SIGKILL)
    stage.wait()
    wait_until(lambda: not session(stage.pid), timeout_s=15, said=lambda: f"left: {commands(session(stage.pid))}")
    leftover = temp_name(proj / "data/clean/conversations.jsonl")   # what a writer killed mid-write leaves
    dead = leftover.with_name(leftover.name.replace(f".{os.getpid()}-", f".{stage.pid}-"))
    dead.write_text('{"half a line')
    again = start_clean(workspace)
    assert again.wait(timeout=600) == 0, again.stderr.read()[-3000:]
    assert not list((proj / "data").rglob("*.tmp")) and reconciles(proj)


def test_only_dead_writers_temp_files_are_swept(tmp_path):
    alive = temp_name(tmp_path / "a.jsonl")              # this process's: a live writer's file stays
    gone = subprocess.Popen(["true"])
    gone.wait()
    dead = tmp_path / "sub" / f".b.jsonl.{gone.pid}-0123abcd.tmp"
    other = tmp_path / ".c.tmp"                          # not an atomic_writer's name: not ours to remove
    for path in (alive, dead, other):
        path.parent.mkdir(exist_ok=True)
        path.write_text("x")
    assert sweep_temp(tmp_path) == [dead]
    assert alive.exists() and other.exists() and not dead.exists()
