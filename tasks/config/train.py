"""The training sections of params.yaml: datasets, sft, pairs, dpo (tasks/train/)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

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


class SftConfig(TrainConfig):
    lora_r: Positive
    lora_alpha: Positive
    lora_dropout: float = Field(ge=0, lt=1)
    target_modules: str | list[str]
    eval_steps: Positive
    packing: bool                              # best-fit packing of conversations into max_length rows, no padding


class DpoConfig(TrainConfig):
    """The preference stage. lora/qlora continue the SFT adapter (its r/alpha/targets); full trains every weight."""
    method: Literal["dpo", "orpo", "kto", "simpo"]  # simpo runs through TRL's CPO trainer
    beta: Ratio                                # dpo/kto: KL strength; orpo: odds-ratio weight; simpo: reward scale
    simpo_gamma: float = Field(ge=0)           # simpo only: target reward margin
