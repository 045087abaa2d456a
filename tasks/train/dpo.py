"""Stage 7: preference tuning on the chosen/rejected pairs, continuing the SFT model; `dpo.method` picks the loss.

- dpo: TRL's DPOTrainer, against a frozen copy of the SFT model.
- kto: TRL's KTOTrainer; KTO learns from unpaired good/bad replies, so each pair becomes two rows.
- orpo: ORPOTrainer (trl.experimental in TRL 1.16), reference-free: SFT loss plus an odds-ratio penalty.
- simpo: CPOTrainer (trl.experimental) with loss_type="simpo" and cpo_alpha=0, which is how TRL implements SimPO:
  reference-free, length-normalised rewards with a target margin `simpo_gamma`.
- grpo, rloo: online RL against the reward stage's model (tasks/train/online.py).
With a LoRA adapter the reference (dpo, kto) is the frozen SFT adapter TRL adds itself; no second model in memory.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset

from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_tokenizer
from tasks.config import ONLINE_METHODS, DpoConfig
from tasks.paths import Paths
from tasks.train import adapters, checkpoints
from tasks.train.training import train, trainer_args


@dataclass(frozen=True)
class Method:
    module: str            # where TRL 1.16 keeps the config and trainer
    names: tuple[str, str]
    needs_reference: bool
    has_input_ids: bool    # batches with `input_ids`, so HF can count tokens for tokens/s


METHODS = {
    "dpo": Method("trl", ("DPOConfig", "DPOTrainer"), True, True),
    "kto": Method("trl", ("KTOConfig", "KTOTrainer"), True, True),
    "orpo": Method("trl.experimental.orpo", ("ORPOConfig", "ORPOTrainer"), False, False),
    "simpo": Method("trl.experimental.cpo", ("CPOConfig", "CPOTrainer"), False, False),
}


def unpaired(pairs: list[dict]) -> list[dict]:
    """KTO's rows: each pair's chosen reply labelled desirable, its rejected reply undesirable."""
    return [{"prompt": p["prompt"], "completion": p[key], "label": key == "chosen"}
            for p in pairs for key in ("chosen", "rejected")]


def method_args(cfg: DpoConfig) -> dict:
    if cfg.method == "simpo":
        return dict(beta=cfg.beta, loss_type="simpo", cpo_alpha=0.0, simpo_gamma=cfg.simpo_gamma)
    return dict(beta=cfg.beta)


def build_trainer(cfg: DpoConfig, seed: int, base_model: Path, sft_out: Path, train_file: Path,
                  checkpoint_dir: Path):
    method = METHODS[cfg.method]
    module = importlib.import_module(method.module)
    config_cls, trainer_cls = (getattr(module, name) for name in method.names)
    pairs = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in read_jsonl(train_file)]
    rows = unpaired(pairs) if cfg.method == "kto" else pairs
    args = config_cls(**trainer_args(cfg, checkpoint_dir, seed, count_tokens=method.has_input_ids),
                      **method_args(cfg))
    policy, reference = adapters.preference_models(cfg, base_model, sft_out, method.needs_reference)
    extra = {"ref_model": reference} if reference is not None else {}
    return trainer_cls(model=policy, args=args, train_dataset=Dataset.from_list(rows),
                       processing_class=load_tokenizer(base_model), **extra)


def dpo(cfg: DpoConfig, seed: int, base_model: Path = Paths.base_model, sft_adapter: Path = Paths.sft_adapter,
        train_file: Path = Paths.pref_train, out_dir: Path = Paths.dpo_adapter,
        checkpoint_root: Path = checkpoints.ROOT, reward_model: Path = Paths.reward_model) -> dict:
    """The preference stage with `cfg.method`; grpo/rloo (tasks/train/online.py) also read the reward model."""
    online = cfg.method in ONLINE_METHODS
    key = checkpoints.fingerprint(cfg, seed, [base_model, sft_adapter, train_file, *([reward_model] if online else [])])
    checkpoint_dir = checkpoints.run_dir("dpo", key, checkpoint_root)
    if online:
        from tasks.train.online import online as train_online
        metrics = train_online(cfg, seed, base_model, sft_adapter, train_file, reward_model, out_dir, checkpoint_dir)
    else:
        trainer = build_trainer(cfg, seed, base_model, sft_adapter, train_file, checkpoint_dir)
        metrics = train(trainer, out_dir, checkpoint_dir, f"{cfg.method.upper()} loss")
        accuracies = [h["rewards/accuracies"] for h in trainer.state.log_history if "rewards/accuracies" in h]
        if accuracies:
            metrics["first_reward_accuracy"], metrics["last_reward_accuracy"] = accuracies[0], accuracies[-1]
    metrics["method"] = cfg.method
    return metrics
