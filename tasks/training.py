"""What the SFT and DPO stages share: trainer arguments from params, and the record each run leaves behind."""
from __future__ import annotations

from pathlib import Path

import torch

from tasks import plots, tracking
from tasks.config import LoraTrainConfig
from tasks.jsonl import write_json
from tasks.modeling import use_bf16


def trainer_args(cfg: LoraTrainConfig, out_dir: Path, seed: int) -> dict:
    """Keyword arguments common to TRL's SFTConfig and DPOConfig. Per-step metrics go to MLflow when a run is
    active (the pipeline opens one per stage); `MLFLOW_*` env vars tell the HF callback where."""
    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(out_dir / "checkpoints"), max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.per_device_batch_size, per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum, logging_steps=cfg.logging_steps, lr_scheduler_type="cosine",
        warmup_steps=max(1, cfg.max_steps // 10), max_length=cfg.max_length, seed=seed, bf16=use_bf16(),
        use_cpu=not on_gpu, save_strategy="no", dataloader_num_workers=0,
        report_to=["mlflow"] if tracking.active() else "none", disable_tqdm=False)


def finish(trainer, out_dir: Path, title: str, eval_key: str = "eval_loss") -> dict:
    """Save the adapter, the per-step log and a loss-curve plot; return the run's summary metrics."""
    trainer.save_model(str(out_dir))
    history = trainer.state.log_history
    write_json(out_dir / "log_history.json", history)
    series = {"train loss": [(h["step"], h["loss"]) for h in history if "loss" in h],
              "eval loss": [(h["step"], h[eval_key]) for h in history if eval_key in h]}
    plots.curves(series, out_dir / "loss_curve.png", title, "loss")
    last = [h for h in history if "train_loss" in h][-1]
    return {"train_loss": round(last["train_loss"], 4), "train_runtime_s": round(last["train_runtime"], 1),
            "steps": trainer.state.global_step,
            "first_logged_loss": series["train loss"][0][1] if series["train loss"] else None,
            "last_logged_loss": series["train loss"][-1][1] if series["train loss"] else None}
