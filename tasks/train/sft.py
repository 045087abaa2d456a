"""Stage 5: supervised fine-tuning through TRL's SFTTrainer, loss on assistant tokens only.

The rows reach TRL tokenized, with the mask of the tokens to train (tasks/common/chat_template.py: from the
template's `{% generation %}` markers, or derived from the template when it has none, as most chat models' do), so
TRL sets every prompt token to -100 and trains on replies including their end-of-turn token. The mask is checked on
real rows first: a template that would train on prompts, or on nothing, stops the stage with the fix.
"""
from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from tasks.common.chat_template import masked_rows
from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_tokenizer
from tasks.config import SftConfig
from tasks.paths import Paths
from tasks.train import adapters, checkpoints
from tasks.train.init_from import Start
from tasks.train.training import train, trainer_args


def build_trainer(cfg: SftConfig, seed: int, base_model: Path, train_file: Path, test_file: Path,
                  checkpoint_dir: Path, init_adapter: Path | None = None):
    from trl import SFTConfig, SFTTrainer

    tokenizer = load_tokenizer(base_model)
    train_rows = masked_rows(tokenizer, [r["messages"] for r in read_jsonl(train_file)])
    test_rows = masked_rows(tokenizer, [r["messages"] for r in read_jsonl(test_file)], samples=0)
    # assistant_only_loss stays off: it asks TRL to make the mask itself, from generation markers only
    args = SFTConfig(**trainer_args(cfg, checkpoint_dir, seed), packing=cfg.packing, eval_strategy="steps",
                     eval_steps=cfg.eval_steps)
    model, peft_config = adapters.sft_model(cfg, base_model, init_adapter)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                      eval_dataset=Dataset.from_list(test_rows), processing_class=tokenizer, peft_config=peft_config)


def sft(cfg: SftConfig, seed: int, base_model: Path = Paths.base_model, train_file: Path = Paths.sft_train,
        test_file: Path = Paths.sft_test, out_dir: Path = Paths.sft_adapter,
        checkpoint_root: Path = checkpoints.ROOT, start: Start | None = None) -> dict:
    """`start`: an earlier round's adapter to continue (sft.init_from: champion); None: a new one on the base."""
    init_adapter = start.adapter if start else None
    key = checkpoints.fingerprint(cfg, seed, [base_model, train_file, test_file, *([init_adapter] if start else [])])
    checkpoint_dir = checkpoints.run_dir("sft", key, checkpoint_root)
    trainer = build_trainer(cfg, seed, base_model, train_file, test_file, checkpoint_dir, init_adapter)
    metrics = train(trainer, out_dir, checkpoint_dir, "SFT loss")
    metrics["eval_loss"] = round(trainer.evaluate()["eval_loss"], 4)
    metrics["init_from"] = f"champion v{start.version}" if start else "base"
    return metrics
