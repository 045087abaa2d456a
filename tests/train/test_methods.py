"""Every training method, adapter kind and option in params.yaml trains on the embedded data shape (tiny data, a
couple of steps each): the loss is finite, the model is saved, and per-step metrics reach MLflow."""
import math

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from tasks.config import load_config
from tests.conftest import ROOT

pytestmark = pytest.mark.slow
TINY = ["max_steps=2", "per_device_batch_size=2", "max_length=128", "logging_steps=1"]


def params(section: str, *overrides: str):
    cfg = load_config(ROOT / "params.yaml", [f"{section}.{o}" for o in TINY + list(overrides)])
    return getattr(cfg, section)


def assert_trained(metrics: dict, out_dir, weights: str = "adapter_model.safetensors") -> None:
    assert metrics["steps"] == 2 and math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["last_logged_loss"])
    assert (out_dir / weights).exists() and (out_dir / "loss_curve.png").exists()


@pytest.fixture(scope="module")
def sft_adapter(base_model_dir, tiny_sets, tmp_path_factory):
    """SFT with packing and gradient checkpointing, inside an MLflow run as the pipeline opens one."""
    from tasks.train.sft import sft

    tmp = tmp_path_factory.mktemp("sft")
    uri, previous = f"sqlite:///{tmp}/mlflow.db", mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", uri)      # where HF's MLflow callback logs
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run() as run:
            metrics = sft(params("sft", "packing=true", "gradient_checkpointing=true", "eval_steps=2"), 0,
                          base_model_dir, tiny_sets["sft"], tiny_sets["sft"], tmp / "adapter",
                          checkpoint_root=tmp / "ckpt")
        mlflow.set_tracking_uri(previous)
    yield tmp / "adapter", metrics, MlflowClient(uri), run.info.run_id


def test_sft_with_packing_and_checkpointing_logs_step_metrics_to_mlflow(sft_adapter):
    out, metrics, client, run_id = sft_adapter
    assert_trained(metrics, out)
    assert metrics["tokens_per_s"] > 0 and metrics["peak_mem_mb"] > 0
    for key in ("loss", "learning_rate", "grad_norm", "tokens_per_s", "peak_mem_mb"):
        assert len(client.get_metric_history(run_id, key)) == 2, key
    assert client.get_metric_history(run_id, "eval_loss")


@pytest.mark.parametrize("method", ["kto", "orpo", "simpo"])
def test_preference_methods_train_from_the_sft_adapter(method, sft_adapter, base_model_dir, tiny_sets, tmp_path):
    from tasks.train.dpo import dpo

    metrics = dpo(params("dpo", f"method={method}"), 0, base_model_dir, sft_adapter[0], tiny_sets["pref"],
                  tmp_path / "out", checkpoint_root=tmp_path / "ckpt")
    assert_trained(metrics, tmp_path / "out")
    assert metrics["method"] == method


def test_full_fine_tuning_then_full_dpo(base_model_dir, tiny_sets, tmp_path):
    from tasks.train.dpo import dpo
    from tasks.train.sft import sft

    sft_metrics = sft(params("sft", "adapter=full"), 0, base_model_dir, tiny_sets["sft"], tiny_sets["sft"],
                      tmp_path / "sft", checkpoint_root=tmp_path / "ckpt")
    assert_trained(sft_metrics, tmp_path / "sft", "model.safetensors")
    metrics = dpo(params("dpo", "adapter=full"), 0, base_model_dir, tmp_path / "sft", tiny_sets["pref"],
                  tmp_path / "dpo", checkpoint_root=tmp_path / "ckpt")
    assert_trained(metrics, tmp_path / "dpo", "model.safetensors")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-only message")
def test_qlora_on_cpu_says_what_to_change(base_model_dir, tiny_sets, tmp_path):
    from tasks.train.sft import sft

    with pytest.raises(ValueError, match="needs a CUDA GPU.*Set `adapter: lora` in the `sft:` section"):
        sft(params("sft", "adapter=qlora"), 0, base_model_dir, tiny_sets["sft"], tiny_sets["sft"], tmp_path / "out",
            checkpoint_root=tmp_path / "ckpt")
