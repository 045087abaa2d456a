"""`make serve` as a user runs it: the registry's @champion behind one address on 127.0.0.1, answering under the
registered model's name; `promote` and `rollback` swap the served model under a running load with no failed request;
over-cap requests are refused and the server stays up; after SIGTERM nothing is left (processes, ports) and the
serving run in MLflow is FINISHED with vLLM's figures as time series. With nothing registered, a clear message."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import mlflow
import pytest
import yaml

from tasks import tracking
from tasks.common.processes import die_with_parent
from tasks.config import TrackingConfig
from tests.conftest import ROOT, noisy_copy

pytestmark = pytest.mark.slow
NAME = "smollm2-sharegpt"


@pytest.fixture
def project(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["vllm"]["python"] = str(ROOT / ".venv-serve" / "bin" / "python")
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
    """`tasks serve` as a user starts it; it dies with pytest (a CI timeout), and its vLLM servers with it (reaper)."""
    return subprocess.Popen([sys.executable, "-m", "tasks", "serve", *args], cwd=project, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)},
                            preexec_fn=die_with_parent)


def read_until(proc: subprocess.Popen, prefix: str, said: list[str]) -> str:
    """`make serve`'s output lines, appended to `said`, up to the one that starts with `prefix` ('' if it exited)."""
    for line in proc.stdout:
        said.append(line)
        if line.startswith(prefix):
            return line
    return ""


def test_nothing_registered_says_what_to_do(project):
    proc = serve(project)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2 and f"no @champion of '{NAME}'" in err and "make pipeline" in err


@pytest.fixture(scope="module")
def other_model(base_model_dir, tmp_path_factory):
    """The base model with noise on its MLP weights: loads and answers like a model, but not the base's answer."""
    import torch

    def noise(t, gen):
        return (t.float() + 0.3 * t.float().std() * torch.randn(t.shape, generator=gen)).to(t.dtype)

    return noisy_copy(base_model_dir, tmp_path_factory.mktemp("other") / "model", "model.safetensors", ".mlp.", noise)


def two_versions(project, model_v1, model_v2, **serve_settings) -> tuple[int, int]:
    """`make serve`'s settings (a free port, a 1 s poll, `serve_settings`); version 1 @champion and version 2
    @challenger with its gates passed (promotable)."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["serve"] |= {"port": 0, "poll_s": 1, **serve_settings}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    v1 = registered(project, model_v1)["version"]
    with mlflow.start_run():
        v2 = tracking.register_model(NAME, model_v2, "challenger", "test", tags={"gates": "passed"})["version"]
    return v1, v2


def chat(url: str, **extra) -> tuple[int, str, str]:
    """(status, answer or error message, x-model-version) of one greedy chat through `make serve`'s address."""
    body = {"model": NAME, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 12, "temperature": 0, **extra}
    req = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, json.loads(resp.read())["choices"][0]["message"]["content"], \
                resp.headers["x-model-version"]
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())["error"]["message"], ""


class Load:
    """Two clients sending chats back to back through the swap; every outcome kept, failures included."""

    def __init__(self, url: str):
        self.url, self.stop, self.results = url, threading.Event(), []
        self.threads = [threading.Thread(target=self._client) for _ in range(2)]
        for t in self.threads:
            t.start()

    def _client(self):
        while not self.stop.is_set():
            try:
                self.results.append(chat(self.url))
            except Exception as err:   # noqa: BLE001 -- a refused connection or a cut answer is what we count
                self.results.append((0, repr(err), ""))
            time.sleep(0.2)

    def wait_for_version(self, version: str, serving: subprocess.Popen, timeout_s: float = 750) -> None:
        # 750 s: room for one retried start (serve_registry.START_ATTEMPTS)
        deadline = time.monotonic() + timeout_s
        while not any(r[2] == version for r in self.results[-2:]):
            if time.monotonic() > deadline or serving.poll() is not None:
                self.finish()
                serving.terminate()
                out, err = serving.communicate(timeout=120)
                pytest.fail(f"version {version} never answered: {self.results[-3:]}\nmake serve said:\n{out}{err}")
            time.sleep(1)

    def finish(self) -> list:
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.results


def cli(project, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasks", *args], cwd=project, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)


def test_serve_follows_promote_and_rollback_under_load_without_a_failed_request(project, base_model_dir, other_model,
                                                                                 monkeypatch):
    monkeypatch.chdir(project)
    v1, v2 = two_versions(project, base_model_dir, other_model, metrics_interval_s=2)
    proc = serve(project)
    lines = []
    assert read_until(proc, "serving", lines).startswith(f"serving {NAME} version {v1} (@champion)"), \
        "".join(lines) + proc.stderr.read()
    url = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", lines[-1]).group(1)
    assert "curl" in next(proc.stdout)
    status, answer_v1, version = chat(url)
    assert status == 200 and answer_v1.strip() and version == str(v1)

    status, message, _ = chat(url, n=1000)                  # measured: vLLM alone held the server 19 s on this
    assert status == 400 and "serve.max_n" in message
    assert chat(url)[0] == 200                              # and it is still up

    load = Load(url)
    moved = cli(project, "promote", str(v2), "--reason", "test swap")
    assert moved.returncode == 0, moved.stderr
    load.wait_for_version(str(v2), proc)
    status, answer_v2, version = chat(url)
    assert status == 200 and version == str(v2) and answer_v2 != answer_v1   # another model answers, not a label
    assert cli(project, "rollback", "--reason", "test rollback").returncode == 0
    load.wait_for_version(str(v1), proc)
    results = load.finish()
    assert chat(url)[1:] == (answer_v1, str(v1))
    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed across the swaps: {failed[:3]}"
    assert {r[2] for r in results} == {str(v1), str(v2)}

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "stopped" in out, out + err
    assert f"version {v1} stopped after finishing" in out and f"version {v2} stopped after finishing" in out
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as s:                             # the proxy is gone ...
        assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not subprocess.run(["pgrep", "-f", str(project / ".cache" / "champion")], capture_output=True,
                              text=True).stdout.strip(), "a vLLM server outlived make serve"   # ... and every vLLM

    run = mlflow.search_runs(search_all_experiments=True, filter_string="tags.stage = 'serve'", output_format="list")
    assert len(run) == 1 and run[0].info.status == "FINISHED"
    client = mlflow.MlflowClient()
    served = {m.value for m in client.get_metric_history(run[0].info.run_id, "served_version")}
    assert served == {v1, v2}                               # the swaps, visible on the run's charts
    assert client.get_metric_history(run[0].info.run_id, "ttft_s_p50")   # vLLM's own /metrics, scraped
    tags = client.get_model_version(NAME, str(v1)).tags
    assert tags["promoted_by"] == "rollback" and tags["rolled_back_from"] == str(v2)


@pytest.fixture(scope="module")
def lora_versions(base_model_dir, untrained_adapter, noisy_adapter, tmp_path_factory):
    """Two vllm.mode-lora folders on the base: the untrained adapter (the base's answers) and a noisy one."""
    from tasks.common.adapter_folder import write_adapter_folder

    root = tmp_path_factory.mktemp("lora")
    for name, adapter in (("v1", untrained_adapter), ("v2", noisy_adapter)):
        write_adapter_folder(adapter, base_model_dir, root / name)
    return root / "v1", root / "v2"


def test_lora_versions_swap_on_the_running_server_without_a_second_one(project, lora_versions, monkeypatch):
    """vllm.mode lora: promote loads the new adapter into the serving vLLM (no second server, no start wait),
    rollback loads the old one back, and no request fails meanwhile."""
    monkeypatch.chdir(project)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["serve"] |= {"port": 0, "poll_s": 1}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    v1 = registered(project, lora_versions[0])["version"]
    with mlflow.start_run():
        v2 = tracking.register_model(NAME, lora_versions[1], "challenger", "test", tags={"gates": "passed"})["version"]
    proc = serve(project)
    try:
        lora_swaps(project, proc, v1, v2)
    finally:
        if proc.poll() is None:   # a failed assertion must not leave make serve and its vLLM running
            proc.kill()
            proc.communicate(timeout=120)


def served_models(url: str) -> set[str]:
    with urllib.request.urlopen(f"{url}/models", timeout=30) as resp:
        return {m["id"] for m in json.loads(resp.read())["data"]}


def lora_swaps(project, proc, v1: int, v2: int) -> None:
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("serving"):
            break
    assert lines and lines[-1].startswith(f"serving {NAME} version {v1}"), "".join(lines) + proc.stderr.read()
    url = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", lines[-1]).group(1)
    status, answer_v1, version = chat(url)
    assert status == 200 and answer_v1.strip() and version == str(v1)

    load = Load(url)
    assert cli(project, "promote", str(v2), "--reason", "lora swap").returncode == 0
    load.wait_for_version(str(v2), proc, timeout_s=60)     # a poll and a load: seconds, not a server start
    status, _, version = chat(url)
    assert status == 200 and version == str(v2)
    assert f"{NAME}-v{v2}" in served_models(url) and NAME not in served_models(url)   # v1's adapter unloaded
    assert cli(project, "rollback", "--reason", "lora rollback").returncode == 0
    load.wait_for_version(str(v1), proc, timeout_s=60)
    results = load.finish()
    assert chat(url)[1:] == (answer_v1, str(v1))
    assert f"{NAME}-v{v1}" in served_models(url) and f"{NAME}-v{v2}" not in served_models(url)
    failed = [r for r in results if r[0] != 200]
    assert not failed, f"{len(failed)} of {len(results)} requests failed across the swaps: {failed[:3]}"

    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    said = "".join(lines) + out
    assert said.count("starting version") == 1, said          # one vLLM server for the three versions served
    assert said.count("loaded as a LoRA adapter on the running server") == 2, said
    assert f"version {v1} unloaded after finishing" in said and f"version {v2} unloaded after finishing" in said
    assert not subprocess.run(["pgrep", "-f", str(project / ".cache" / "champion")], capture_output=True,
                              text=True).stdout.strip(), "a vLLM server outlived make serve"


def test_a_taken_port_is_a_one_line_error(project, base_model_dir, monkeypatch):
    monkeypatch.chdir(project)
    registered(project, base_model_dir)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        proc = serve(project, "--port", str(busy.getsockname()[1]))
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "is in use" in err and "Traceback" not in err


def post_json(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict, dict]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=300) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def test_compare_answers_with_both_versions_records_the_pick_and_promoting_the_challenger_starts_nothing(
        project, base_model_dir, other_model, monkeypatch):
    """serve.compare: every chat goes to @champion and @challenger (a second server beside); `x-compare: both`
    returns both answers, a pick is recorded and counted as the challenger's win, a plain request gets one of
    the two; promoting the challenger moves traffic to its running server at once."""
    monkeypatch.chdir(project)
    v1, v2 = two_versions(project, base_model_dir, other_model, record=True, compare=1.0)
    proc = serve(project)
    said = []
    read_until(proc, "serving", said)
    assert f"comparing version {v1} with @challenger version {v2} (serve.compare)\n" in said, \
        "".join(said) + proc.stderr.read()
    url = re.search(r"at (http://127\.0\.0\.1:\d+)/v1", said[-1]).group(1)
    try:
        ask = {"model": NAME, "messages": [{"role": "user", "content": "What is the capital of France?"}],
               "max_tokens": 12, "temperature": 0}
        status, both, headers = post_json(f"{url}/v1/chat/completions", ask, {"x-compare": "both"})
        assert status == 200 and both["object"] == "chat.completion.compare", both
        answers = {a["model_version"]: a for a in both["answers"]}
        assert set(answers) == {v1, v2} and answers[v1]["choices"][0]["message"]["content"] != \
            answers[v2]["choices"][0]["message"]["content"]
        feedback = f"{url}/v1/feedback"
        assert post_json(feedback, {"id": both["id"], "chosen": "chatcmpl-other"})[0] == 400
        assert post_json(feedback, {"id": "cmp-unknown", "chosen": answers[v2]["id"]})[0] == 404
        assert post_json(feedback, {"id": both["id"], "chosen": answers[v2]["id"]})[0] == 200
        status, one, headers = post_json(f"{url}/v1/chat/completions", ask)
        assert status == 200 and one["object"] == "chat.completion" and headers["x-compare-id"].startswith("cmp-")
        assert int(headers["x-model-version"]) in (v1, v2)
        moved = cli(project, "promote", str(v2), "--reason", "won the A/B test")
        assert moved.returncode == 0, moved.stderr
        healthy = read_until(proc, f"version {v2} healthy after", said)
        assert float(healthy.split(" after ")[1].split(" s")[0]) < 2 and f"starting version {v2}" not in "".join(said)
        status, after, headers = post_json(f"{url}/v1/chat/completions", ask)
        assert status == 200 and headers["x-model-version"] == str(v2) and "x-compare-id" not in headers
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    status = json.loads(cli(project, "flywheel").stdout)
    assert status["ab_picks_won"] == {f"v{v2}": 1} and status["picked"] == 1
