"""The training sections of params.yaml: datasets, sft, pairs, dpo (tasks/train/)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from tasks.config.section import Section


class DatasetsConfig(Section):
    test_fraction: float = Field(gt=0, lt=1)
    max_tokens: int
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
    max_steps: int
    per_device_batch_size: int
    grad_accum: int
    learning_rate: float
    max_length: int
    logging_steps: int
    save_steps: int = Field(ge=0)              # checkpoint every N steps outside DVC outs; a re-run resumes; 0 = off
    gradient_checkpointing: bool               # recompute activations in backward: less memory, slower steps
    adapter: Literal["lora", "qlora", "full"]  # qlora = 4-bit NF4 base (bitsandbytes), CUDA only


class SftConfig(TrainConfig):
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: str | list[str]
    eval_steps: int
    packing: bool                              # best-fit packing of conversations into max_length rows, no padding


class DpoConfig(TrainConfig):
    """The preference stage. lora/qlora continue the SFT adapter (its r/alpha/targets); full trains every weight."""
    method: Literal["dpo", "orpo", "kto", "simpo"]  # simpo runs through TRL's CPO trainer
    beta: float                                # dpo/kto: KL strength; orpo: odds-ratio weight; simpo: reward scale
    simpo_gamma: float                         # simpo only: target reward margin
