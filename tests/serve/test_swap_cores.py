"""A server started beside a running one starts on its own half of the cores (reaper --cpus) and, once the old one
is gone, all of it but vLLM's workers goes back to every core (swap.spread). The real swap under load is
tests/serve/test_serve_registry.py; here plain processes stand in, named as vLLM names its own."""
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks.common.processes import group_processes
from tasks.serve.swap import WORKER, spread

REAPER = Path(__file__).parents[2] / "tasks" / "common" / "reaper.py"
# a parent (the API server) that starts a named child (the worker) and waits, as vLLM's processes do
FAMILY = f"""import ctypes, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import ctypes, time; "
                          "ctypes.CDLL(None).prctl(15, b'{WORKER}'); time.sleep(60)"])
time.sleep(60)
"""

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to pin to one")


def affinities(pgid: int) -> list[tuple[str, set[int]]]:
    """(name, cores) of each process in the group."""
    return [(name, os.sched_getaffinity(pid)) for pid, name in group_processes(pgid).items()]


def test_the_group_starts_on_its_cores_and_only_the_worker_stays_there():
    cores = sorted(os.sched_getaffinity(0))
    proc = subprocess.Popen([sys.executable, str(REAPER), str(os.getpid()), "--cpus", str(cores[-1]), "--",
                             sys.executable, "-c", FAMILY], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while WORKER not in dict(affinities(proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.2)
        started = affinities(proc.pid)
        assert len(started) == 3 and all(mask == {cores[-1]} for _, mask in started), started  # reaper, parent, worker
        spread(SimpleNamespace(proc=proc))
        spread_out = sorted(affinities(proc.pid), key=lambda row: row[0] == WORKER)
        assert spread_out == [("python", set(cores)), ("python", set(cores)), (WORKER, {cores[-1]})], spread_out
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()
