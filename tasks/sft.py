"""Stage 5: supervised fine-tuning with LoRA through TRL's SFTTrainer, loss on assistant tokens only.

The base tokenizer's chat template carries `{% generation %}` markers (see base_model.py), so TRL masks every
prompt token to -100 and trains on replies including their end-of-turn token.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from datasets import Dataset

from tasks.config import Paths, SftConfig
from tasks.jsonl import read_jsonl
from tasks.modeling import load_model, load_tokenizer
from tasks.training import finish, trainer_args


def build_trainer(cfg: SftConfig, seed: int, base_model: Path, train_file: Path, test_file: Path, out_dir: Path):
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**trainer_args(cfg, out_dir, seed), assistant_only_loss=True, eval_strategy="steps",
                     eval_steps=cfg.eval_steps)
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.target_modules, task_type="CAUSAL_LM")
    return SFTTrainer(model=load_model(base_model, trainable=True), args=args,
                      train_dataset=Dataset.from_list(list(read_jsonl(train_file))),
                      eval_dataset=Dataset.from_list(list(read_jsonl(test_file))),
                      processing_class=load_tokenizer(base_model), peft_config=lora)


def sft(cfg: SftConfig, seed: int, base_model: Path = Paths.base_model, train_file: Path = Paths.sft_train,
        test_file: Path = Paths.sft_test, out_dir: Path = Paths.sft_adapter) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    trainer = build_trainer(cfg, seed, base_model, train_file, test_file, out_dir)
    trainer.train()
    metrics = finish(trainer, out_dir, "SFT loss")
    metrics["eval_loss"] = round(trainer.evaluate()["eval_loss"], 4)
    shutil.rmtree(out_dir / "checkpoints", ignore_errors=True)
    return metrics
