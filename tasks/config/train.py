"""The training sections of params.yaml: datasets, sft, pairs, reward, dpo (tasks/train/)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config.section import Positive, Ratio, Section


class DatasetsConfig(Section):
    test_fraction: float = Field(gt=0, lt=1)
    max_tokens: Positive
    sft_train_size: int = Field(ge=0)
    sft_test_size: int = Field(ge=1)
    pref_train_size: int = Field(ge=1)
    pref_test_size: int = Field(ge=1)


class PairsConfig(Section):
    """Preference pairs: rejected replies sampled from the SFT model, chosen and rejected on one token budget."""
    max_tokens: int = Field(ge=1)              # the budget: chosen cut to it, rejected sampled to chosen's length
    batch_size: int = Field(ge=1)
    temperature: float = Field(gt=0)
    top_p: float = Field(gt=0, le=1)
    user_pairs: str                            # a JSONL of prompt/chosen/rejected (message lists) to use instead


class TrainConfig(Section):
    """What every training stage shares; tasks/train/training.py turns it into TRL/HF TrainingArguments."""
    max_steps: Positive
    per_device_batch_size: Positive
    grad_accum: Positive
    learning_rate: float = Field(ge=0, le=1)       # 0: training switched off (a control run)
    max_length: Positive
    logging_steps: Positive
    save_steps: int = Field(ge=0)              # checkpoint every N steps outside DVC outs; a re-run resumes; 0 = off
    gradient_checkpointing: bool               # recompute activations in backward: less memory, slower steps
    adapter: Literal["lora", "qlora", "full"]  # qlora = 4-bit NF4 base (bitsandbytes), CUDA only


class LoraTrainConfig(TrainConfig):
    """A stage that starts a LoRA adapter of its own (lora_* and target_modules: lora and qlora only)."""
    lora_r: Positive
    lora_alpha: Positive
    lora_dropout: float = Field(ge=0, lt=1)
    target_modules: str | list[str]


class SftConfig(LoraTrainConfig):
    eval_steps: Positive
    # base: a new adapter on the base model; champion: continue the registry's @champion's adapter (a new round on
    # new data plus a replay share of the old: tasks/train/init_from.py)
    init_from: Literal["base", "champion"]
    packing: bool                              # best-fit packing of conversations into max_length rows, no padding


ONLINE_METHODS = ("grpo", "rloo")   # dpo.method values that sample and score during training (tasks/train/online.py)


class RuleRewards(Section):
    """Rewards from rules, added to the reward model's in grpo/rloo (tasks/train/online.py); each one off by default."""
    length_min: int = Field(ge=0)              # reply tokens: 1 inside [length_min, length_max], less the further out
    length_max: int = Field(ge=0)              # 0 = no length rule
    format_regex: str                          # 1 when the reply matches (re.search), else 0; "" = off
    python: str                                # "package.module:function", called as TRL calls reward functions
    weight: float = Field(ge=0)                # each rule's weight; the reward model's is 1


class DpoConfig(TrainConfig):
    """The preference stage. lora/qlora continue the SFT adapter (its r/alpha/targets); full trains every weight.
    grpo/rloo are online: the policy samples replies to the pairs' prompts and the reward model scores them."""
    method: Literal["dpo", "orpo", "kto", "simpo", "grpo", "rloo"]  # simpo runs through TRL's CPO trainer
    beta: Ratio                   # dpo/kto/grpo/rloo: KL strength; orpo: odds-ratio weight; simpo: reward scale
    simpo_gamma: float = Field(ge=0)           # simpo only: target reward margin
    num_generations: int = Field(ge=2)         # grpo/rloo: replies sampled per prompt, the group each is compared to
    max_completion_length: Positive            # grpo/rloo: tokens sampled per reply
    temperature: float = Field(gt=0)           # grpo/rloo: sampling temperature
    rewards: RuleRewards

    @model_validator(mode="after")
    def _whole_groups(self) -> DpoConfig:
        """TRL samples a step's replies in whole groups of num_generations: say so before any model loads."""
        if self.method in ONLINE_METHODS and self.per_device_batch_size % self.num_generations:
            raise ValueError(f"dpo.per_device_batch_size ({self.per_device_batch_size}) counts sampled replies in "
                             f"{self.method}: make it a multiple of dpo.num_generations ({self.num_generations})")
        return self


class RewardConfig(LoraTrainConfig):
    """The reward model: a scalar head on the SFT model, trained on the preference pairs (tasks/train/reward.py)."""
    adapter: Literal["lora", "full"]           # lora: an adapter on the SFT body + the head, merged when saved
    center_rewards_coefficient: float = Field(ge=0)   # pulls rewards toward 0 (TRL; 0 = off), so scores compare
