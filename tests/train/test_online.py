"""GRPO and RLOO (`dpo.method`) train the SFT adapter against the reward stage's model plus rule rewards: the reward
and the KL to the SFT model are logged per step, sampled replies reach MLflow as tables, and a run killed with SIGKILL
after a checkpoint resumes from it. Tiny: 2 replies of 8 tokens per prompt, a few steps."""
import json
import math
import os
import subprocess
import sys

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT, configured
from tests.train.test_resume import kill_after_first_checkpoint

pytestmark = pytest.mark.slow
CFG = dict(max_steps=2, per_device_batch_size=2, num_generations=2, max_completion_length=8, logging_steps=1,
           save_steps=1, rewards=dict(length_min=2, length_max=6, format_regex="^[A-Z]",
                                      python="tests.train.test_online:says_yes", weight=0.5))


def says_yes(prompts, completions, **_):
    """A user's own reward function, as dpo.rewards.python names it."""
    return [float("yes" in c[-1]["content"].lower()) for c in completions]


@pytest.mark.parametrize("method", ["grpo", "rloo"])
def test_online_rl_logs_reward_kl_and_completions(method, base_model_dir, untrained_adapter, tiny_sets,
                                                  tiny_reward_model, tmp_path):
    from tasks.train.dpo import dpo

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    previous = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run() as run:
            metrics = dpo(configured("dpo", method=method, **CFG), 0, base_model_dir, untrained_adapter,
                          tiny_sets["pref"], tmp_path / "out", checkpoint_root=tmp_path / "ckpt",
                          reward_model=tiny_reward_model[1])
        mlflow.set_tracking_uri(previous)
    assert metrics["method"] == method and metrics["steps"] == 2 and math.isfinite(metrics["train_loss"])
    assert "last_reward" in metrics and metrics["last_kl"] >= 0, metrics
    assert (tmp_path / "out" / "adapter_model.safetensors").exists() and (tmp_path / "out" / "reward_kl.png").exists()
    client = MlflowClient(uri)
    assert len(client.get_metric_history(run.info.run_id, "kl")) == 2
    names = set(client.get_run(run.info.run_id).data.metrics)
    assert {"reward", "kl"} <= names and any("says_yes" in n for n in names), names
    tables = [a.path for a in client.list_artifacts(run.info.run_id, "completions")]
    assert len(tables) == 2, tables                     # one per logging step
    with open(client.download_artifacts(run.info.run_id, tables[-1], str(tmp_path))) as f:
        table = json.load(f)
    assert {"step", "prompt", "completion", "advantage"} <= set(table["columns"]) and len(table["data"]) >= 2
    prompts = {p["prompt"][-1]["content"] for p in map(json.loads, open(tiny_sets["pref"]))}
    assert table["data"][0][table["columns"].index("prompt")] in prompts      # readable text, not message lists


DRIVER = """
import json, sys
from pathlib import Path
from tasks.train.dpo import dpo
from tests.conftest import configured
base, adapter, data, reward, out, ckpt = map(Path, sys.argv[2:8])
metrics = dpo(configured("dpo", **json.loads(sys.argv[1])), 0, base, adapter, data, out, checkpoint_root=ckpt,
              reward_model=reward)
print("METRICS " + json.dumps(metrics))
"""


def test_a_killed_grpo_run_resumes_from_its_checkpoint(base_model_dir, untrained_adapter, tiny_sets,
                                                       tiny_reward_model, tmp_path):
    cfg = {**CFG, "method": "grpo", "max_steps": 4}
    cmd = [sys.executable, "-c", DRIVER, json.dumps(cfg), str(base_model_dir), str(untrained_adapter),
           str(tiny_sets["pref"]), str(tiny_reward_model[1]), str(tmp_path / "out"), str(tmp_path / "ckpt")]
    kill_after_first_checkpoint(cmd, tmp_path / "ckpt" / "dpo", tmp_path / "out")
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads(done.stdout.split("METRICS ", 1)[1])
    assert 0 < metrics["resumed_from_step"] < 4 and metrics["steps"] == 4 and metrics["method"] == "grpo"
    history = json.loads((tmp_path / "out" / "log_history.json").read_text())
    assert sorted(h["step"] for h in history if "kl" in h) == [1, 2, 3, 4]
