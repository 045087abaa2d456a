"""A pipeline killed with SIGKILL while vLLM serves leaves no server behind: the reaper that leads vLLM's process
group takes the API server, engine core and workers down when the process that started them dies."""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
DRIVER = """
import sys, time
from pathlib import Path
from tasks.common.vllm_server import VLLMServer
from tests.conftest import configured
server = VLLMServer(configured("vllm", python=sys.argv[1]), Path(sys.argv[2])).start()
print(server.proc.pid, server.port, flush=True)
time.sleep(3600)
"""


def group_members(pgid: int) -> set[int]:
    """The pids in process group `pgid` (field 5 of /proc/PID/stat, after the parenthesised command name)."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue   # gone while we looked
        if int(fields[2]) == pgid:
            members.add(int(stat.parent.name))
    return members


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_sigkilled_parent_leaves_no_vllm_process_and_no_open_port(base_model_dir, tmp_path):
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(ROOT / ".venv-serve" / "bin" / "python"),
                               str(base_model_dir)], cwd=tmp_path, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    pgid, port = map(int, driver.stdout.readline().split())
    assert group_alive(pgid) and len(subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True,
                                                    text=True).stdout.split()) >= 3   # reaper, API server, engine
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 60
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(1)
    survivors = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout.split()
    if survivors:
        os.killpg(pgid, signal.SIGKILL)            # leave the machine clean for the next test, then fail
    assert not survivors, f"vLLM processes outlived their parent: {survivors}"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_a_group_whose_owner_and_reaper_both_died_is_killed_at_the_next_start(tmp_path):
    """The reaper itself killed (an OOM kill): the .pid file VLLMServer writes lets the next start kill the group."""
    import json

    from tasks.common.processes import owner_tags, process_started, reap_stale_groups

    dead_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_owner.wait()
    orphan = subprocess.Popen(["sh", "-c", "sleep 600 & wait"], start_new_session=True)   # leader + a member
    alive = subprocess.Popen(["sleep", "600"], start_new_session=True)
    record = {"process.pid": str(dead_owner.pid), "process.host": socket.gethostname(), "process.started": "1"}
    (tmp_path / "vllm-2.pid").write_text(json.dumps({**owner_tags(), "pgid": alive.pid,   # its owner lives: kept
                                                     "pgid_started": process_started(alive.pid)}))
    started = process_started(orphan.pid)
    deadline = time.monotonic() + 10   # the member exists before its leader dies (sh forks it later on a busy CPU)
    while not group_members(orphan.pid) - {orphan.pid} and time.monotonic() < deadline:
        time.sleep(0.05)
    orphan.kill()                                      # the reaper killed: its group's member serves on
    orphan.wait()
    assert group_alive(orphan.pid)
    (tmp_path / "vllm-1.pid").write_text(json.dumps({**record, "pgid": orphan.pid, "pgid_started": started}))
    assert reap_stale_groups(tmp_path) == [orphan.pid]
    deadline = time.monotonic() + 10
    while group_alive(orphan.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not group_alive(orphan.pid) and alive.poll() is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vllm-2.pid"]
    alive.kill()
