"""`make serve` as a user runs it: the registry's @champion behind vLLM on 127.0.0.1, answering under the registered
model's name, and gone (process group and port) after SIGTERM; with nothing registered, a clear message."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

import mlflow
import pytest
import yaml

from tasks import tracking
from tasks.config import TrackingConfig
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
NAME = "smollm2-sharegpt"


@pytest.fixture
def project(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["deploy"]["python"] = str(ROOT / ".venv-serve" / "bin" / "python")
    # absolute: MLflow caches one store per URI, so a relative sqlite path would still open the last test's file
    params["tracking"] |= {"tracking_uri": f"sqlite:///{tmp_path}/mlruns/mlflow.db",
                           "artifact_root": str(tmp_path / "mlruns" / "artifacts")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def registered(project, model_dir) -> dict:
    """`model_dir` as version 1 @champion in the project's own store, as params.yaml names it."""
    params = yaml.safe_load((project / "params.yaml").read_text())["tracking"]
    tracking.configure(TrackingConfig(**params))
    with mlflow.start_run():
        return tracking.register_model(NAME, model_dir, "champion", "test")


def serve(project, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tasks.serve.serve_registry", *args], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_nothing_registered_says_what_to_do(project):
    proc = serve(project)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and f"no @champion of '{NAME}'" in err and "make pipeline" in err


def test_serves_the_champion_and_stops_cleanly_on_sigterm(project, base_model_dir, monkeypatch):
    monkeypatch.chdir(project)
    version = registered(project, base_model_dir)["version"]
    proc = serve(project)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("serving"):
            break
    assert lines and lines[-1].startswith(f"serving {NAME} version {version} (@champion)"), \
        "".join(lines) + proc.stderr.read()
    url = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", lines[-1]).group(1)
    body = {"model": NAME, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16, "temperature": 0}
    req = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as resp:
        assert json.loads(resp.read())["choices"][0]["message"]["content"].strip()
    assert "curl" in next(proc.stdout)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped" in out
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:                             # vLLM's whole group is gone: nothing holds the port
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert (project / ".cache" / "champion" / f"v{version}" / "config.json").exists()


def test_a_taken_port_is_a_one_line_error(project, base_model_dir, monkeypatch):
    monkeypatch.chdir(project)
    registered(project, base_model_dir)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = serve(project, "--port", str(busy.getsockname()[1]))
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "is in use" in err and "Traceback" not in err
