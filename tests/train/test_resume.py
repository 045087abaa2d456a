"""A training run killed with SIGKILL after a checkpoint resumes on re-run and ends where an uninterrupted run ends;
checkpoints from other settings or data are never resumed. Real SFT in a subprocess, tiny data."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tasks.train import checkpoints
from tests.conftest import ROOT, configured

STEPS = 16
CFG = dict(max_steps=STEPS, per_device_batch_size=2, max_length=128, logging_steps=1, eval_steps=1000, save_steps=4,
           learning_rate=5e-4)
DRIVER = """
import json, sys
from pathlib import Path
from tasks.train.sft import sft
from tests.conftest import configured
base, data, out, ckpt = map(Path, sys.argv[2:6])
metrics = sft(configured("sft", **json.loads(sys.argv[1])), 0, base, data, data, out, checkpoint_root=ckpt)
print("METRICS " + json.dumps(metrics))
"""


def _command(base_model_dir, data, out, ckpt):
    return [sys.executable, "-c", DRIVER, json.dumps(CFG), str(base_model_dir), str(data), str(out), str(ckpt)]


def _run(cmd) -> dict:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.split("METRICS ", 1)[1])


def kill_after_first_checkpoint(cmd: list[str], stage_checkpoints, out) -> None:
    """Run `cmd` (a training driver) and SIGKILL it once a whole checkpoint is under `stage_checkpoints`."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 600
    while not list(stage_checkpoints.glob(f"*/checkpoint-*/{checkpoints.STATE_FILE}")):
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before its first checkpoint"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "adapter_model.safetensors").exists(), "the run finished before it was killed"


def _losses(out) -> dict[int, float]:
    return {h["step"]: h["loss"] for h in json.loads((out / "log_history.json").read_text()) if "loss" in h}


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(base_model_dir, tiny_sets, tmp_path):
    straight = _run(_command(base_model_dir, tiny_sets["sft"], tmp_path / "a", tmp_path / "ckpt_a"))
    assert not (tmp_path / "ckpt_a").exists()          # removed after success

    cmd = _command(base_model_dir, tiny_sets["sft"], tmp_path / "b", tmp_path / "ckpt_b")
    kill_after_first_checkpoint(cmd, tmp_path / "ckpt_b" / "sft", tmp_path / "b")

    resumed = _run(cmd)
    a, b = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    after = [s for s in a if s > resumed["resumed_from_step"]]
    worst = max(abs(b[s] - a[s]) / a[s] for s in after)
    print(f"\nresumed from step {resumed['resumed_from_step']}: steps {straight['steps']} vs {resumed['steps']}, "
          f"final loss {a[STEPS]:.6f} vs {b[STEPS]:.6f}, worst per-step relative difference after resume {worst:.2e}")
    assert 0 < resumed["resumed_from_step"] < STEPS
    assert resumed["steps"] == straight["steps"] == STEPS
    assert sorted(b) == sorted(a) == list(range(1, STEPS + 1))     # the restored log history has every step once
    assert abs(b[STEPS] - a[STEPS]) <= 0.01 * a[STEPS]
    assert not (tmp_path / "ckpt_b").exists()


def test_fingerprint_changes_with_params_and_data_and_stale_checkpoints_go(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text('{"messages": []}\n')
    key = checkpoints.fingerprint(configured("sft", **CFG), 0, [data])
    assert key == checkpoints.fingerprint(configured("sft", **CFG), 0, [data])
    assert key != checkpoints.fingerprint(configured("sft", **{**CFG, "learning_rate": 1e-4}), 0, [data])
    assert key != checkpoints.fingerprint(configured("sft", **CFG), 1, [data])
    stale = checkpoints.run_dir("sft", key, tmp_path / "ckpt") / "checkpoint-4"
    (stale / checkpoints.STATE_FILE).parent.mkdir(parents=True)
    (stale / checkpoints.STATE_FILE).write_text("{}")
    (tmp_path / "ckpt" / "sft" / key / "checkpoint-8").mkdir()   # cut off mid-save: no trainer_state.json
    assert checkpoints.last_complete(tmp_path / "ckpt" / "sft" / key) == stale

    data.write_text('{"messages": [{"role": "user", "content": "changed"}]}\n')
    new_key = checkpoints.fingerprint(configured("sft", **CFG), 0, [data])
    assert new_key != key
    fresh = checkpoints.run_dir("sft", new_key, tmp_path / "ckpt")
    assert checkpoints.last_complete(fresh) is None and not stale.exists()


@pytest.mark.slow
def test_preference_run_resumes_its_trained_adapter_not_the_sft_one(base_model_dir, tiny_sets, tmp_path, monkeypatch):
    """DPO keeps a second adapter (the frozen `ref`); transformers alone would resume with the trained adapter reset to
    the SFT weights (policy == reference, loss back at log 2). Crash by exception here: the SIGKILL path is above."""
    from transformers import TrainerCallback

    from tasks.train import dpo as dpo_module
    from tasks.train.sft import sft

    sft(configured("sft", max_steps=1, per_device_batch_size=2, max_length=128), 0, base_model_dir, tiny_sets["sft"],
        tiny_sets["sft"], tmp_path / "sft", checkpoint_root=tmp_path / "ckpt")
    cfg = configured("dpo", max_steps=4, per_device_batch_size=2, max_length=128, logging_steps=1, save_steps=2,
                    learning_rate=5e-4)

    def run(name: str) -> dict:
        return dpo_module.dpo(cfg, 0, base_model_dir, tmp_path / "sft", tiny_sets["pref"], tmp_path / name,
                              checkpoint_root=tmp_path / f"ckpt_{name}")

    straight = run("a")

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise KeyboardInterrupt

    def crashing_train(trainer, *args, **kwargs):
        trainer.add_callback(Crash())
        return train(trainer, *args, **kwargs)

    from tasks.train.training import train
    monkeypatch.setattr(dpo_module, "train", crashing_train)
    with pytest.raises(KeyboardInterrupt):
        run("b")
    monkeypatch.setattr(dpo_module, "train", train)
    resumed = run("b")
    assert resumed["resumed_from_step"] == 2 and resumed["steps"] == straight["steps"] == 4
    assert _losses(tmp_path / "b") == pytest.approx(_losses(tmp_path / "a"), rel=0.01)
