"""What the SFT and preference stages share: trainer arguments from params, the train-or-resume loop, per-step
tracking, and the record each run leaves behind."""
from __future__ import annotations

import math
import resource
import shutil
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from tasks import tracking
from tasks.common import plots
from tasks.common.jsonl import write_json
from tasks.common.modeling import use_bf16
from tasks.config import TrainConfig
from tasks.train import checkpoints


def trainer_args(cfg: TrainConfig, checkpoint_dir: Path, seed: int, count_tokens: bool = True) -> dict:
    """Keyword arguments common to every TRL config (SFT, DPO, KTO, ORPO, CPO). Checkpoints go to `checkpoint_dir`
    (outside DVC's outs, see tasks/train/checkpoints.py); two are kept so a kill during a save leaves a whole one behind.
    Per-step metrics go to MLflow when a run is active (the pipeline opens one per stage); `MLFLOW_*` env vars tell
    the HF callback where. `count_tokens` needs batches with `input_ids` (SFT, DPO, KTO; not ORPO/CPO)."""
    on_gpu = torch.cuda.is_available()
    return dict(
        output_dir=str(checkpoint_dir), max_steps=cfg.max_steps, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.per_device_batch_size, per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.grad_accum, logging_steps=cfg.logging_steps, lr_scheduler_type="cosine",
        warmup_steps=max(1, cfg.max_steps // 10), max_length=cfg.max_length, seed=seed, bf16=use_bf16(),
        use_cpu=not on_gpu, dataloader_num_workers=0, gradient_checkpointing=cfg.gradient_checkpointing,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or cfg.max_steps,
        save_total_limit=2, include_num_input_tokens_seen="non_padding" if count_tokens else "no",
        report_to=["mlflow"] if tracking.active() else "none", disable_tqdm=False)


def peak_memory_mb() -> float:
    """CUDA: max allocated by torch; CPU: the process's peak resident set (Linux reports KiB)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepMetrics(TrainerCallback):
    """Adds tokens/s (non-padding input tokens over the training time since the last log, evaluation and saving
    excluded) and peak memory to each training log. It must run before MLflow's callback, which logs the same
    `logs` dict: `train` puts it first."""

    def __init__(self):
        self.t0, self.tokens0, self.history = 0.0, 0, []

    def _restart(self, state) -> None:
        self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen

    def on_train_begin(self, args, state, control, **kwargs):
        self._restart(state)

    def on_evaluate(self, args, state, control, **kwargs):
        self._restart(state)

    def on_save(self, args, state, control, **kwargs):
        self._restart(state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        seconds, tokens = time.perf_counter() - self.t0, state.num_input_tokens_seen - self.tokens0
        if tokens and seconds > 0:
            logs["tokens_per_s"] = round(tokens / seconds, 1)
        logs["peak_mem_mb"] = round(peak_memory_mb(), 1)
        self.history.append({"step": state.global_step, "tokens": tokens, "seconds": seconds})
        self._restart(state)

    def tokens_per_s(self, skip_first: int = 0) -> float | None:
        """Over all logged intervals after the first `skip_first` (the first steps include one-off warm-up)."""
        kept = self.history[skip_first:]
        tokens, seconds = sum(h["tokens"] for h in kept), sum(h["seconds"] for h in kept)
        return round(tokens / seconds, 1) if tokens and seconds else None


def train(trainer, out_dir: Path, checkpoint_dir: Path, title: str, eval_key: str = "eval_loss") -> dict:
    """Train, resuming from the newest whole checkpoint in `checkpoint_dir` if a previous run was killed; then save
    the model and its record to `out_dir` and delete the checkpoints."""
    shutil.rmtree(out_dir, ignore_errors=True)
    step_metrics = StepMetrics()
    trainer.callback_handler.callbacks.insert(0, step_metrics)
    resume = checkpoints.last_complete(checkpoint_dir)
    if resume:
        _restore_trained_adapter(trainer.model, resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    metrics = finish(trainer, out_dir, title, eval_key)
    metrics["resumed_from_step"] = int(resume.name.split("-")[-1]) if resume else 0
    metrics["tokens_per_s"] = step_metrics.tokens_per_s()
    metrics["peak_mem_mb"] = round(peak_memory_mb(), 1)
    metrics["distributed"] = f"{trainer.accelerator.distributed_type.value} x{trainer.accelerator.num_processes}"
    if trainer.is_world_process_zero():
        checkpoints.remove(checkpoint_dir)
    return metrics


def _restore_trained_adapter(model, checkpoint: Path) -> None:
    """Load the trained adapter's weights from `checkpoint` before HF resumes. With a second adapter (TRL's frozen
    `ref` copy in DPO/KTO, saved in a subfolder) transformers 5.17 reloads only the subfolder adapters and leaves the
    trained one at its initial weights: the resumed run would restart from the SFT adapter (policy == reference)."""
    from peft import PeftModel
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = checkpoint / "adapter_model.safetensors"
    if isinstance(model, PeftModel) and weights.exists():
        set_peft_model_state_dict(model, load_file(weights), adapter_name=model.active_adapter)


def finish(trainer, out_dir: Path, title: str, eval_key: str = "eval_loss") -> dict:
    """Save the model, the per-step log, the trainer's resolved arguments and a loss-curve plot; return the run's
    summary metrics. `train_loss` is the mean of the logged losses, which stays right for a resumed run (HF's own
    divides the resumed part by all steps)."""
    trainer.save_model(str(out_dir))      # every rank: FSDP/ZeRO-3 gather the weights to rank 0 here
    history = trainer.state.log_history
    series = {"train loss": [(h["step"], h["loss"]) for h in history if "loss" in h],
              "eval loss": [(h["step"], h[eval_key]) for h in history if eval_key in h]}
    if trainer.is_world_process_zero():
        write_json(out_dir / "log_history.json", history)
        (out_dir / "trainer_args.json").write_text(trainer.args.to_json_string())
        plots.curves(series, out_dir / "loss_curve.png", title, "loss")
    losses = [loss for _, loss in series["train loss"]]
    last = [h for h in history if "train_runtime" in h][-1]
    return {"train_loss": round(sum(losses) / len(losses), 4) if losses else math.nan,
            "train_runtime_s": round(last["train_runtime"], 1), "steps": trainer.state.global_step,
            "first_logged_loss": losses[0] if losses else None, "last_logged_loss": losses[-1] if losses else None}
