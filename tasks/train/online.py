"""Online RL (`dpo.method: grpo | rloo`): the policy (the SFT adapter, continued) samples replies to the pairs'
prompts, the reward model of the reward stage scores them (plus any rule rewards in `dpo.rewards`), and the policy
moves toward the better ones in each prompt's group, held near the SFT model by a KL penalty (`dpo.beta`).

The handbooks' path is PPO (InstructGPT): a clipped surrogate loss with a learned value model as the baseline.
TRL 1.16 ships no PPO trainer; GRPO keeps PPO's clipped surrogate and replaces the value model by the group of
`num_generations` replies to the same prompt (advantage = reward minus the group mean, over its std); RLOO uses the
mean of the group's *other* replies (leave one out). What is lost: a per-token value estimate (credit assignment
within a reply) and one model less to train, which on a CPU is most of the memory.

Generation runs through transformers `generate` inside the trainer. TRL's vLLM server mode needs `trl vllm-serve`
in the training env and a weight-sync channel to it; vLLM here lives in its own env (its pins differ), so it is not
offered. The reference for the KL is a frozen copy of the SFT adapter that TRL adds itself (as for DPO).
"""
from __future__ import annotations

import importlib
import re
from pathlib import Path

from datasets import Dataset
from transformers import TrainerCallback

from tasks import tracking
from tasks.common import plots
from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_tokenizer
from tasks.config import DpoConfig, RuleRewards
from tasks.train import adapters
from tasks.train.reward import load_reward_model
from tasks.train.training import train, trainer_args

METHODS = {"grpo": ("GRPOConfig", "GRPOTrainer"), "rloo": ("RLOOConfig", "RLOOTrainer")}


def _text(completion) -> str:
    """A completion's text: conversational completions are a list of messages."""
    return completion[-1]["content"] if isinstance(completion, list) else completion


def rule_rewards(rules: RuleRewards, tokenizer) -> list:
    """The reward functions `dpo.rewards` switches on, in TRL's signature f(prompts, completions, **kwargs)."""
    funcs = []
    if rules.length_max:
        def length_window(prompts, completions, **_):
            lengths = [len(tokenizer(_text(c), add_special_tokens=False)["input_ids"]) for c in completions]
            return [max(0.0, 1 - max(rules.length_min - n, n - rules.length_max, 0) / rules.length_max)
                    for n in lengths]
        funcs.append(length_window)
    if rules.format_regex:
        pattern = re.compile(rules.format_regex)

        def format_regex(prompts, completions, **_):
            return [float(bool(pattern.search(_text(c)))) for c in completions]
        funcs.append(format_regex)
    if rules.python:
        module, _, name = rules.python.partition(":")
        try:
            funcs.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError) as err:
            raise ValueError(f"dpo.rewards.python {rules.python!r}: {err}. Give it as 'package.module:function', "
                             "importable from the project folder") from err
    return funcs


class CompletionsTable(TrainerCallback):
    """The replies sampled for each logged step (prompt, reply, each reward, advantage) as an MLflow table
    `completions/step_NNNNN.json`, so a reader sees what the policy says as it learns. Read from the trainer's `_logs`,
    the buffer TRL 1.16's GRPO and RLOO trainers fill per step and build their own tables from (RLOO only sends them
    to wandb/trackio)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "reward" not in logs:        # the run's closing summary
            return
        buffer = self.trainer._logs
        rows = [{"step": state.global_step, "prompt": _text(prompt), "completion": _text(completion),
                 **{name: values[i] for name, values in buffer["rewards"].items()},
                 "advantage": buffer["advantages"][i]}
                for i, (prompt, completion) in enumerate(zip(buffer["prompt"], buffer["completion"]))]
        tracking.log_table(rows, f"completions/step_{state.global_step:05d}.json")


def build_trainer(cfg: DpoConfig, seed: int, base_model: Path, sft_adapter: Path, train_file: Path,
                  reward_model: Path, checkpoint_dir: Path):
    if cfg.adapter == "full":
        raise ValueError(f"dpo.method {cfg.method} continues the SFT LoRA adapter (its frozen copy is the KL "
                         "reference); with adapter: full TRL would take the base model as the reference. Set "
                         "`adapter: lora` in the `dpo:` section of params.yaml.")
    module = importlib.import_module("trl")
    config_cls, trainer_cls = (getattr(module, name) for name in METHODS[cfg.method])
    tokenizer = load_tokenizer(base_model)
    scorer, scorer_tokenizer = load_reward_model(reward_model)
    rules = rule_rewards(cfg.rewards, tokenizer)
    args = trainer_args(cfg, checkpoint_dir, seed, count_tokens=False)
    args.pop("max_length")                         # the prompts are as datasets cut them; replies: max_completion_length
    config = config_cls(**args, beta=cfg.beta, num_generations=cfg.num_generations,
                        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature,
                        reward_weights=[1.0] + [cfg.rewards.weight] * len(rules))
    prompts = [{"prompt": r["prompt"]} for r in read_jsonl(train_file)]
    policy, _ = adapters.preference_models(cfg, base_model, sft_adapter, needs_reference=False)
    trainer = trainer_cls(model=policy, reward_funcs=[scorer, *rules], args=config,
                          train_dataset=Dataset.from_list(prompts), processing_class=tokenizer,
                          reward_processing_classes=[scorer_tokenizer] + [None] * len(rules))
    trainer.add_callback(CompletionsTable(trainer))
    return trainer


def online(cfg: DpoConfig, seed: int, base_model: Path, sft_adapter: Path, train_file: Path, reward_model: Path,
           out_dir: Path, checkpoint_dir: Path) -> dict:
    """Train with GRPO or RLOO; the reward and KL curves go next to the loss curve."""
    trainer = build_trainer(cfg, seed, base_model, sft_adapter, train_file, reward_model, checkpoint_dir)
    metrics = train(trainer, out_dir, checkpoint_dir, f"{cfg.method.upper()} loss")
    history = trainer.state.log_history
    series = {key: [(h["step"], h[key]) for h in history if key in h] for key in ("reward", "kl")}
    plots.curves(series, out_dir / "reward_kl.png", f"{cfg.method.upper()}: reward and KL to the SFT model", "value")
    for key, points in series.items():
        if points:
            metrics[f"first_{key}"], metrics[f"last_{key}"] = points[0][1], points[-1][1]
    metrics["last_reward_accuracy"] = None      # the pairwise methods' headline figure: no pairs here (see last_reward)
    return metrics
