"""The stage entry point (`python -m tasks run sft`) runs unchanged under `accelerate launch` with the configs in
infra/accelerate, one CPU process here. FSDP: accelerate 1.15 turns FSDP on only for GPU-type backends, so on a CPU
the same launch runs as MULTI_CPU (DDP over gloo): the launcher, process group, rank-0 saving and the stage's outputs
are what it checks. DeepSpeed ZeRO-3 does run on a CPU (its CPU accelerator JIT-builds a shared-memory comm op with
ninja and a C++ compiler, a minute the first time)."""
import json
import os
import signal
import subprocess
import sys

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from tests.conftest import ROOT

CONFIGS = ROOT / "infra" / "accelerate"


@pytest.mark.parametrize("name, kind, key", [("fsdp", "FSDP", "fsdp_config"),
                                             ("deepspeed_zero3", "DEEPSPEED", "deepspeed_config")])
def test_accelerate_configs_load(name, kind, key):
    cfg = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    assert cfg.distributed_type.value == kind and getattr(cfg, key)


@pytest.mark.slow
@pytest.mark.parametrize("name, expected", [("fsdp", "MULTI_CPU x1"), ("deepspeed_zero3", "DEEPSPEED x1")])
def test_sft_stage_runs_under_accelerate_launch(name, expected, base_model_dir, tiny_sets, tmp_path):
    (tmp_path / "data" / "datasets").mkdir(parents=True)
    (tmp_path / "data" / "models").mkdir()
    (tmp_path / "data" / "models" / "base").symlink_to(base_model_dir)
    for split in ("train", "test"):
        (tmp_path / "data" / "datasets" / f"sft_{split}.jsonl").write_bytes(tiny_sets["sft"].read_bytes())
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["sft"].update(max_steps=2, per_device_batch_size=2, max_length=128, eval_steps=2, logging_steps=1,
                         save_steps=1)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIGS / f"{name}.yaml"),
           "--num_processes", "1", "--mixed_precision", "no", "-m", "tasks", "run", "sft"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    # its own process group, so a hang is stopped whole: DeepSpeed waits forever on the lock of a build of its CPU
    # extension (~/.cache/torch_extensions/*/deepspeed_shm_comm/lock) that a killed earlier run left behind
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=1200)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("accelerate launch ran past 20 min: a stale torch_extensions lock (see above) is the usual cause")
    assert proc.returncode == 0, stderr[-4000:]
    metrics = json.loads((tmp_path / "data" / "stages" / "sft.json").read_text())
    assert metrics["steps"] == 2 and metrics["distributed"] == expected
    assert (tmp_path / "data" / "models" / "sft_adapter" / "adapter_model.safetensors").exists()
    assert not (tmp_path / ".checkpoints").exists()
