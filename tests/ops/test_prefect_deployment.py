"""The Prefect deployment as a user runs it: a Prefect server on loopback, `make deploy` (infra/prefect/deploy.sh) and a
process worker, on a copy of the project with a tiny params file; runs stop after `clean` (`until`), about a minute.
A run triggered while another runs waits for it; a worker and its flow run killed outright leave the run Crashed,
not Running, and the next run frees its concurrency slot, resumes, and marks the dead MLflow run KILLED."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from tasks.common.vllm_server import free_port
from tests.conftest import ROOT
from tests.small_project import small_project

DEPLOYMENT = "finetune-pipeline/nightly"
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}
# a flow run outside the deployment, as `python -m tasks pipeline` against the server is: Prefect's 180 s heartbeat
OTHER_FLOW = """
import time
from prefect import flow

flow(name="other-flow")(lambda: time.sleep(600))()
"""


def _api(url: str, body: dict | None = None):
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _wait(check, timeout: float, what: str, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except OSError:
            pass
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


def _pids_with_env(entry: str) -> list[int]:
    """Processes whose environment holds `entry` (e.g. this test's PREFECT_HOME): the ones this test started."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if entry.encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            pass
    return found


def _kill_groups(pids: list[int]) -> None:
    """SIGKILL the process groups of `pids`: what a lost machine does to them."""
    groups = set()
    for pid in pids:
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:   # gone already
            pass
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class Prefect:
    """One Prefect server for the module and a copy of the project deployed to it, as `make deploy` does."""

    def __init__(self, tmp: Path):
        self.proj, self.home, self.port = tmp / "project", tmp / "prefect", free_port("127.0.0.1")
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
                    "PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        self.worker: subprocess.Popen | None = None

    def call(self, path: str, body: dict | None = None):
        return _api(self.api + path, body)

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=self.proj, env=self.env, capture_output=True, text=True, timeout=300)

    def start_worker(self) -> None:
        self.worker = subprocess.Popen(["prefect", "worker", "start", "--pool", "pipeline"], cwd=self.proj,
                                       env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                       start_new_session=True)

    def trigger(self, *params: str) -> str:
        """`prefect deployment run` with `-p` params; the new flow run's id."""
        out = self.run("prefect", "deployment", "run", DEPLOYMENT, *[a for p in params for a in ("-p", p)])
        assert out.returncode == 0, out.stdout + out.stderr
        return re.search(r"UUID: (\S+)", out.stdout).group(1)

    def flow_run(self, run_id: str) -> dict:
        return self.call(f"/flow_runs/{run_id}")

    def finished(self, run_id: str, timeout: float) -> dict:
        return _wait(lambda: (r := self.flow_run(run_id))["state"]["type"] in FINAL and r, timeout,
                     f"flow run {run_id} to finish", every=3)

    def state_names(self, run_id: str) -> list[str]:
        states = self.call(f"/flow_run_states/?flow_run_id={run_id}")
        return [s["name"] for s in sorted(states, key=lambda s: s["timestamp"])]

    def task_runs(self, run_id: str) -> list[dict]:
        """The flow run's task runs in order: one per stage it ran, named after the stage."""
        return self.call("/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}},
                                               "sort": "EXPECTED_START_TIME_ASC"})

    def stages_run(self, run_id: str) -> list[str]:
        return [r["name"].rsplit("-", 1)[0] for r in self.task_runs(run_id)]

    def heartbeats(self, run_id: str) -> list[dict]:
        events = {"event": {"name": ["prefect.flow-run.heartbeat"]},
                  "any_resource": {"id": [f"prefect.flow-run.{run_id}"]}}
        return self.call("/events/filter", {"filter": events})["events"]


@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    p = Prefect(tmp_path_factory.mktemp("deployment"))
    params = small_project(p.proj, sections=(), files=("dvc.yaml", "prefect.yaml"),
                           folders=("tasks", "flows", "infra/prefect"))
    params["ingest"]["max_records"] = 300   # base_model, ingest and clean in about a minute
    (p.proj / "params.yaml").write_text(yaml.safe_dump(params))
    assert p.run("dvc", "init", "--no-scm", "-q").returncode == 0
    server = subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(p.port)], env=p.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: p.call("/health"), 120, "the Prefect server")
        deployed = p.run("bash", "infra/prefect/deploy.sh")
        assert deployed.returncode == 0, deployed.stdout[-3000:] + deployed.stderr[-3000:]
        p.start_worker()
        yield p
    finally:   # server, workers, flow runs and whatever they started: all carry this test's PREFECT_HOME
        _kill_groups(_pids_with_env(f"PREFECT_HOME={p.home}") + [server.pid])


def test_stages_until_stops_after_the_named_stage():
    from flows.pipeline import stages_until
    from tasks.stages import STAGES

    assert [s.name for s in stages_until("clean")] == ["base_model", "ingest", "clean"]
    assert stages_until(None) == STAGES
    with pytest.raises(ValueError, match="cleaning.*base_model, ingest, clean"):
        stages_until("cleaning")


@pytest.mark.slow
def test_a_worker_runs_the_deployment_one_run_at_a_time(prefect):
    deployment = prefect.call(f"/deployments/name/{DEPLOYMENT}")
    assert deployment["work_pool_name"] == "pipeline"
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]
    assert deployment["global_concurrency_limit"]["limit"] == 1
    assert deployment["concurrency_options"]["collision_strategy"] == "ENQUEUE"
    nightly = _wait(lambda: prefect.call("/flow_runs/filter", {"flow_runs": {
        "deployment_id": {"any_": [deployment["id"]]}, "state": {"type": {"any_": ["SCHEDULED"]}}}}), 60,
        "the scheduler's nightly runs")
    assert {run["expected_start_time"][11:19] for run in nightly} == {"03:00:00"}

    first, second = prefect.trigger("until=clean"), prefect.trigger("until=clean")
    runs = sorted((prefect.finished(first, 600), prefect.finished(second, 300)), key=lambda r: r["start_time"])
    assert [r["state"]["type"] for r in runs] == ["COMPLETED", "COMPLETED"]
    assert runs[1]["start_time"] >= runs[0]["end_time"]   # never overlapping: the later one waited its turn
    assert "AwaitingConcurrencySlot" in prefect.state_names(runs[1]["id"])
    assert prefect.stages_run(runs[0]["id"]) == ["base_model", "ingest", "clean"]
    assert prefect.stages_run(runs[1]["id"]) == []   # DVC: everything up to `clean` was up to date
    locked = yaml.safe_load((prefect.proj / "dvc.lock").read_text())["stages"]
    assert set(locked) == {"base_model", "ingest", "clean"} and not (prefect.proj / "data/datasets").exists()

    failing = prefect.finished(prefect.trigger("params_file=missing.yaml"), 180)
    assert (failing["state"]["type"], failing["run_count"]) == ("FAILED", 2)   # retried once, not marked Crashed


@pytest.mark.slow
def test_a_killed_worker_leaves_its_run_crashed_not_running(prefect):
    from mlflow.tracking import MlflowClient

    other = subprocess.Popen([sys.executable, "-c", OTHER_FLOW], cwd=prefect.proj, env=prefect.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    run_id = prefect.trigger("until=clean", "force=true")   # base_model again: a minute to kill it in
    _wait(lambda: any(r["state"]["type"] == "RUNNING" for r in prefect.task_runs(run_id)), 300,
          "the run's first stage to start")
    _wait(lambda: prefect.heartbeats(run_id), 60, "the run's first heartbeat (the automation waits for the next)")
    flow_processes = _pids_with_env(f"PREFECT__FLOW_RUN_ID={run_id}")
    assert flow_processes
    _kill_groups(flow_processes + [prefect.worker.pid])
    assert prefect.flow_run(run_id)["state"]["type"] == "RUNNING"   # nothing left to tell the server otherwise

    crashed = _wait(lambda: (r := prefect.flow_run(run_id))["state"]["type"] != "RUNNING" and r, 150,
                    "the automation to mark the run", every=5)
    assert crashed["state"]["type"] == "CRASHED", crashed["state"]
    assert "No heartbeat" in crashed["state"]["message"]
    [other_run] = prefect.call("/flow_runs/filter", {"flows": {"name": {"any_": ["other-flow"]}}})
    silent_s = (datetime.now(timezone.utc) - datetime.fromisoformat(other_run["start_time"])).total_seconds()
    assert other_run["state"]["type"] == "RUNNING" and silent_s > 95   # no heartbeat for > 90 s, yet left alone
    _kill_groups([other.pid])

    client = MlflowClient(tracking_uri=f"sqlite:///{prefect.proj / 'mlruns/mlflow.db'}")
    [dead] = client.search_runs([client.get_experiment_by_name("finetune-pipeline").experiment_id],
                                "attributes.status = 'RUNNING' and tags.`pipeline.launcher` = 'prefect'")
    assert int(dead.data.tags["process.pid"]) in flow_processes   # the pipeline's parent run, left RUNNING
    prefect.start_worker()   # the next run gets the slot the crashed one held, and resumes from what DVC says
    assert prefect.finished(prefect.trigger("until=clean"), 600)["state"]["type"] == "COMPLETED"
    assert client.get_run(dead.info.run_id).info.status == "KILLED"
