"""The reward stage (after pairs): the first half of InstructGPT's path, SFT -> reward model -> RL against it.

TRL's RewardTrainer trains a scalar head (sequence classification, num_labels=1) on the SFT model, LoRA by default
(the head itself is trained in full: PEFT's SEQ_CLS task keeps `score` trainable), on the pairs stage's
chosen/rejected replies with the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected). The adapter is merged before
saving, so whoever scores with it (the RL stage, evaluate's reward judge) loads one plain model.

What it reports on the held-out pairs, which no training step saw:
- pairwise accuracy (chosen scored above rejected) and the reward margin, with its distribution (margins.png);
- the correlation of reward with reply length: a reward model that learned "longer is better" is the classic way
  RL against it goes wrong (the policy learns to ramble). The pairs stage matches chosen and rejected in length, so
  what is measured here is what the head learned, not a length gap in the data.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import torch
from datasets import Dataset

from tasks.common import plots
from tasks.common.jsonl import read_jsonl, write_json
from tasks.common.modeling import load_model, load_tokenizer, train_dtype
from tasks.config import RewardConfig
from tasks.paths import Paths
from tasks.train import checkpoints
from tasks.train.training import train, trainer_args

ROWS = ("prompt", "chosen", "rejected")


def reward_model_from(base_model: Path, sft_adapter: Path):
    """A sequence-classification model with the SFT model's body (adapter merged) and a fresh one-output head."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    causal = load_model(base_model, adapter=sft_adapter, trainable=True)
    causal = causal.merge_and_unload() if hasattr(causal, "merge_and_unload") else causal
    config = AutoConfig.from_pretrained(base_model, num_labels=1)
    model = AutoModelForSequenceClassification.from_config(config, dtype=train_dtype())
    body = getattr(model, model.base_model_prefix)
    body.load_state_dict(getattr(causal, causal.base_model_prefix).state_dict())
    return model


def build_trainer(cfg: RewardConfig, seed: int, base_model: Path, sft_adapter: Path, train_file: Path,
                  checkpoint_dir: Path):
    from peft import LoraConfig
    from trl import RewardConfig as TrlRewardConfig
    from trl import RewardTrainer

    tokenizer = load_tokenizer(base_model)
    model = reward_model_from(base_model, sft_adapter)
    model.config.pad_token_id = tokenizer.pad_token_id
    rows = [{k: r[k] for k in ROWS} for r in read_jsonl(train_file)]
    args = TrlRewardConfig(**trainer_args(cfg, checkpoint_dir, seed, count_tokens=False),
                           center_rewards_coefficient=cfg.center_rewards_coefficient or None)
    peft_config = None if cfg.adapter == "full" else LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=cfg.target_modules,
        task_type="SEQ_CLS")
    return RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=peft_config)


@torch.inference_mode()
def score(model, tokenizer, prompts: list[list[dict]], replies: list[str], max_length: int,
          batch_size: int = 8) -> list[float]:
    """The reward of each reply to its prompt (chat-templated as in training, cut to `max_length` tokens)."""
    tokenizer.padding_side = "right"
    rewards = []
    for start in range(0, len(prompts), batch_size):
        texts = [tokenizer.apply_chat_template(p + [{"role": "assistant", "content": r}], tokenize=False)
                 for p, r in zip(prompts[start:start + batch_size], replies[start:start + batch_size])]
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, add_special_tokens=False,
                        return_tensors="pt").to(model.device)
        rewards += model(**enc).logits[:, 0].float().tolist()
    return rewards


def load_reward_model(path: Path):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(path, dtype=train_dtype()).eval(), load_tokenizer(path)


def pearson(xs: list[float], ys: list[float]) -> float | None:
    return round(statistics.correlation(xs, ys), 3) if len(xs) > 2 and len(set(xs)) > 1 and len(set(ys)) > 1 \
        else None


def held_out_report(model, tokenizer, test_file: Path, max_length: int, out_dir: Path) -> dict:
    """Accuracy, margins and the length correlation on the held-out pairs; the margins' histogram."""
    pairs = list(read_jsonl(test_file))
    prompts = [p["prompt"] for p in pairs]
    chosen = score(model, tokenizer, prompts, [p["chosen"][-1]["content"] for p in pairs], max_length)
    rejected = score(model, tokenizer, prompts, [p["rejected"][-1]["content"] for p in pairs], max_length)
    margins = [c - r for c, r in zip(chosen, rejected)]
    lengths = [len(tokenizer(p[key][-1]["content"], add_special_tokens=False)["input_ids"])
               for key in ("chosen", "rejected") for p in pairs]
    bound = max(1.0, *(abs(m) for m in margins))
    plots.histogram(margins, out_dir / "margins.png", f"reward margin on {len(pairs)} held-out pairs",
                    "reward(chosen) - reward(rejected)", threshold=0.0, bins_range=(-bound, bound))
    write_json(out_dir / "held_out_scores.json", [{"id": p.get("id"), "chosen": c, "rejected": r}
                                                  for p, c, r in zip(pairs, chosen, rejected)])
    return {"held_out_pairs": len(pairs),
            "held_out_accuracy": round(sum(m > 0 for m in margins) / len(margins), 3),
            "held_out_margin_mean": round(statistics.fmean(margins), 4),
            "held_out_margin_median": round(statistics.median(margins), 4),
            "reward_length_correlation": pearson(lengths, chosen + rejected)}


def train_reward_model(cfg: RewardConfig, seed: int, base_model: Path = Paths.base_model,
                       sft_adapter: Path = Paths.sft_adapter, train_file: Path = Paths.pref_train,
                       test_file: Path = Paths.pref_test, out_dir: Path = Paths.reward_model,
                       checkpoint_root: Path = checkpoints.ROOT) -> dict:
    key = checkpoints.fingerprint(cfg, seed, [base_model, sft_adapter, train_file])
    checkpoint_dir = checkpoints.run_dir("reward", key, checkpoint_root)
    trainer = build_trainer(cfg, seed, base_model, sft_adapter, train_file, checkpoint_dir)
    metrics = train(trainer, out_dir, checkpoint_dir, "reward model loss")
    model = trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
    for leftover in ("adapter_model.safetensors", "adapter_config.json"):
        (out_dir / leftover).unlink(missing_ok=True)      # the merged model replaces the adapter train() saved
    model.save_pretrained(out_dir)
    trainer.processing_class.save_pretrained(out_dir)
    accuracies = [h["accuracy"] for h in trainer.state.log_history if "accuracy" in h]
    metrics["last_train_accuracy"] = accuracies[-1] if accuracies else None
    return {**metrics, **held_out_report(model.eval(), trainer.processing_class, test_file, cfg.max_length, out_dir)}
