"""A pipeline killed with SIGKILL while vLLM serves leaves no server behind: the reaper that leads vLLM's process
group takes the API server, engine core and workers down when the process that started them dies."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow
DRIVER = """
import sys, time
from pathlib import Path
from tasks.common.vllm_server import VLLMServer
from tasks.config import DeployConfig
server = VLLMServer(DeployConfig(python=sys.argv[1]), Path(sys.argv[2])).start()
print(server.proc.pid, server.port, flush=True)
time.sleep(3600)
"""


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
