"""`make schedule` as a user runs it: a Prefect server on loopback, the flow served with a cron schedule."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tasks.common.vllm_server import free_port
from tests.conftest import ROOT


def _api(url: str, body: dict | None = None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"timed out waiting for {what}")


def test_flow_is_served_on_a_cron_schedule(tmp_path):
    port = free_port("127.0.0.1")
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect = str(ROOT / ".venv" / "bin" / "prefect")
    server = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    served = None
    try:
        _wait(lambda: _api(f"{api}/health"), 120, "the Prefect server")
        served = subprocess.Popen([sys.executable, "-m", "flows.pipeline", "--serve", "0 3 * * *"], cwd=ROOT,
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        deployments = _wait(lambda: _api(f"{api}/deployments/filter", {}), 120, "the served deployment")
        assert [d["name"] for d in deployments] == ["scheduled"]
        assert deployments[0]["schedules"][0]["schedule"]["cron"] == "0 3 * * *"
        runs = _wait(lambda: _api(f"{api}/flow_runs/filter", {}), 60, "scheduled flow runs")
        assert all(r["state"]["type"] == "SCHEDULED" for r in runs)   # queued for 03:00, none started now
    finally:
        for proc in (served, server):
            if proc is not None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(30)
