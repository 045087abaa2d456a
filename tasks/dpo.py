"""Stage 6: DPO through TRL's DPOTrainer, continuing the SFT LoRA adapter.

The SFT adapter is loaded trainable and no peft_config is passed: TRL then keeps a frozen copy of the adapter as the
reference, so no second model sits in memory.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from datasets import Dataset

from tasks.config import DpoConfig, Paths
from tasks.jsonl import read_jsonl
from tasks.modeling import load_model, load_tokenizer
from tasks.training import finish, trainer_args


def dpo(cfg: DpoConfig, seed: int, base_model: Path = Paths.base_model, sft_adapter: Path = Paths.sft_adapter,
        train_file: Path = Paths.pref_train, out_dir: Path = Paths.dpo_adapter) -> dict:
    from trl import DPOConfig, DPOTrainer

    shutil.rmtree(out_dir, ignore_errors=True)
    args = DPOConfig(**trainer_args(cfg, out_dir, seed), beta=cfg.beta)
    trainer = DPOTrainer(model=load_model(base_model, adapter=sft_adapter, trainable=True), args=args,
                         train_dataset=Dataset.from_list(list(read_jsonl(train_file))),
                         processing_class=load_tokenizer(base_model))
    trainer.train()
    metrics = finish(trainer, out_dir, "DPO loss")
    accuracies = [h["rewards/accuracies"] for h in trainer.state.log_history if "rewards/accuracies" in h]
    metrics["first_reward_accuracy"], metrics["last_reward_accuracy"] = accuracies[0], accuracies[-1]
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return metrics
