"""One server per flow run (kept_servers): a later `with VLLMServer(...)` for the same model gets the running server,
one for another model stops the idle one first, one in use is never stopped, and all stop when the block ends.

A small HTTP server that answers /health stands in for vLLM (started through the same reaper and process group), so
this runs in seconds; the flow doing it with real vLLM is tests/test_pipeline_e2e.py."""
import os
import sys

import pytest

from tasks.common import vllm_server
from tasks.common.vllm_server import VLLMServer, kept_servers
from tests.conftest import configured

STUB = """import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

class Health(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[sys.argv.index("--port") + 1])), Health).serve_forever()
"""


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "stub.py").write_text(STUB)
    python = tmp_path / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'stub.py'} \"$@\"\n")
    python.chmod(0o755)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    return configured("vllm", python=str(python), startup_timeout_s=30)


def alive(server: VLLMServer) -> bool:
    return server.proc is not None and server.proc.poll() is None


def test_a_later_stage_reuses_the_server_and_another_model_replaces_it(cfg, tmp_path, capsys):
    with kept_servers():
        with VLLMServer(cfg, tmp_path / "a") as deployed:       # smoke_test
            assert deployed.startup_s > 0
        assert alive(deployed)                                  # kept after its `with`
        longer = cfg.model_copy(update={"max_model_len": cfg.max_model_len * 2})
        with VLLMServer(cfg, tmp_path / "a") as same, VLLMServer(longer, tmp_path / "a") as needs_more:
            assert same is deployed and same.startup_s == 0.0   # evaluate: the same server, no start
            assert needs_more is not deployed                   # a longer context: its own server, beside the one
            assert alive(deployed) and alive(needs_more)        # in use, which is not stopped
        assert f"needs {longer.max_model_len} (raise vllm.max_model_len)" in capsys.readouterr().out
        with VLLMServer(cfg, tmp_path / "b") as other:          # another model (the champion): the idle ones stop
            assert not alive(deployed) and not alive(needs_more) and alive(other)
    assert not alive(other) and vllm_server._kept is None       # the block's end stops every server
    assert not list((tmp_path / ".serve-logs").glob("*.pid"))


def test_a_failure_inside_the_block_stops_the_kept_servers_and_outside_nothing_is_kept(cfg, tmp_path):
    with pytest.raises(RuntimeError), kept_servers():
        with VLLMServer(cfg, tmp_path / "a") as server:
            pid = server.proc.pid
        raise RuntimeError("a later stage failed")
    assert not alive(server)
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)                                       # its whole process group is gone
    with VLLMServer(cfg, tmp_path / "a") as server:             # outside the block: started and stopped per `with`
        pass
    assert not alive(server)
