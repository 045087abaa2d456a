"""Runs a dead process left RUNNING are marked KILLED at the next pipeline start; live, foreign and older runs are
left alone (nothing tells whether their process died)."""
import socket
import subprocess

from mlflow.tracking import MlflowClient

from tasks import tracking
from tasks.common.processes import owner_tags
from tasks.config import load_config
from tests.conftest import ROOT


def test_runs_left_running_by_a_dead_process_are_marked_killed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(ROOT / "params.yaml", [f"tracking.tracking_uri=sqlite:///{tmp_path}/db.sqlite",
                                             f"tracking.artifact_root={tmp_path}/art"])
    exp = tracking.configure(cfg.tracking)
    gone = subprocess.Popen(["true"])
    gone.wait()
    host, client = socket.gethostname(), MlflowClient()
    runs = {"dead": {"process.pid": str(gone.pid), "process.host": host, "process.started": "1"},
            "reused pid": {**owner_tags(), "process.started": "1"},       # this pid, but not the process that ran it
            "alive": owner_tags(), "elsewhere": {"process.pid": "1", "process.host": "gpu-7", "process.started": "1"},
            "older": {}}
    ids = {name: client.create_run(exp, run_name=name, tags=tags).info.run_id for name, tags in runs.items()}
    tracking.start_pipeline(cfg, launcher="flow", params_file=ROOT / "params.yaml")
    status = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert status == {"dead": "KILLED", "reused pid": "KILLED", "alive": "RUNNING", "elsewhere": "RUNNING",
                      "older": "RUNNING"}
    assert "died without ending the run" in client.get_run(ids["dead"]).data.tags["killed_reason"]
    assert client.get_run(ids["dead"]).info.end_time is not None


def test_credentials_in_params_never_reach_the_mlflow_store_or_the_logs(tmp_path, monkeypatch, capfd):
    """Planted in the settings that can hold them (an env map, a URL's userinfo, a secret-named query value), the
    credentials are nowhere in the store's files; the settings around them, and the harmless env tunings, still are."""
    monkeypatch.chdir(tmp_path)
    token, password, sig = "hf_PlantedToken9f8e7d6c5b4a", "Hunter2PlantedPw", "PlantedSig00451"
    cfg = load_config(ROOT / "params.yaml", [
        f"tracking.tracking_uri=sqlite:///{tmp_path}/store/db.sqlite", f"tracking.artifact_root={tmp_path}/store/art",
        f"vllm.env={{HF_TOKEN: {token}, VLLM_CPU_KVCACHE_SPACE: '4'}}",
        f"evaluate.judge.base_url=http://bob:{password}@127.0.0.1:9/v1?sig={sig}"])
    parent = tracking.start_pipeline(cfg, launcher="flow", params_file=ROOT / "params.yaml")
    with tracking.stage_run(cfg, "smoke_test", parent, ("vllm", "evaluate.judge")) as run_id:
        tracking.log_results({"judge_endpoint": cfg.evaluate.judge.base_url, "ok": 1}, [])
    tracking.end_pipeline(parent)
    stored = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    printed = "".join(capfd.readouterr())
    for secret in (token, password, sig):
        assert secret.encode() not in stored and secret not in printed
    params = MlflowClient().get_run(run_id).data.params
    assert params["params.vllm.env.HF_TOKEN"] == "***"
    assert params["params.vllm.env.VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert params["params.evaluate.judge.base_url"] == "http://***@127.0.0.1:9/v1?sig=***"
    assert MlflowClient().get_run(parent).data.params["vllm.env.HF_TOKEN"] == "***"
