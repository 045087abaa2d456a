"""Which weights a training stage updates (params `adapter`): a LoRA adapter, a LoRA adapter over a 4-bit NF4 base
(QLoRA), or every weight (full). The preference stage continues what SFT produced: its LoRA adapter, or for `full`
the SFT model with its adapter merged in."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from tasks.common.modeling import is_adapter, load_model
from tasks.config import DpoConfig, SftConfig, TrainConfig


def check_supported(cfg: TrainConfig, section: str) -> None:
    """QLoRA's 4-bit kernels (bitsandbytes) run on CUDA only: say so before any model is loaded."""
    if cfg.adapter != "qlora":
        return
    if not torch.cuda.is_available():
        raise ValueError(f"{section}.adapter is 'qlora', which loads the base model in 4-bit NF4 through bitsandbytes "
                         f"and needs a CUDA GPU; this machine has none. Set `adapter: lora` in the `{section}:` "
                         "section of params.yaml (same adapter, full-precision base; fits easily for small models).")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"{section}.adapter is 'qlora' but bitsandbytes is not installed: `pip install bitsandbytes` "
                         f"in the training env, or set `adapter: lora` in the `{section}:` section of params.yaml.")


def _four_bit_base(base_model: Path, cfg: TrainConfig):
    from peft import prepare_model_for_kbit_training

    model = load_model(base_model, trainable=True, four_bit=True)
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)


def sft_model(cfg: SftConfig, base_model: Path, init_adapter: Path | None = None):
    """The model to train and the LoraConfig TRL wraps it in (None for full fine-tuning, and when `init_adapter`, an
    earlier round's LoRA adapter, is continued: tasks/train/init_from.py)."""
    from peft import LoraConfig, PeftModel

    check_supported(cfg, "sft")
    if init_adapter is not None and cfg.adapter == "full":
        raise ValueError("sft.init_from: champion continues the champion's LoRA adapter; with sft.adapter: full there "
                         "is none to continue. Set init_from: base, or adapter: lora")
    if cfg.adapter == "qlora":
        model = _four_bit_base(base_model, cfg)
    else:
        model = load_model(base_model, trainable=True)
    if cfg.adapter == "full":
        return model, None
    if init_adapter is not None:
        return PeftModel.from_pretrained(model, init_adapter, is_trainable=True), None
    return model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                             target_modules=cfg.target_modules, task_type="CAUSAL_LM")


def _sft_merged(base_model: Path, sft_out: Path):
    model = load_model(base_model, adapter=sft_out, trainable=True)
    return model.merge_and_unload() if is_adapter(sft_out) else model


def preference_models(cfg: DpoConfig, base_model: Path, sft_out: Path, needs_reference: bool):
    """(policy, reference). With an adapter the reference is None: TRL keeps a frozen copy of the SFT adapter
    as the reference, so no second model sits in memory. Full fine-tuning needs an explicit frozen SFT model."""
    from peft import PeftModel

    check_supported(cfg, "dpo")
    if cfg.adapter == "full":
        reference = _sft_merged(base_model, sft_out).eval() if needs_reference else None
        return _sft_merged(base_model, sft_out), reference
    if not is_adapter(sft_out):
        raise ValueError(f"dpo.adapter is '{cfg.adapter}', which continues the SFT LoRA adapter, but {sft_out} holds "
                         "a whole model (sft.adapter: full). Set `adapter: full` in the `dpo:` section of params.yaml.")
    if cfg.adapter == "qlora":
        return PeftModel.from_pretrained(_four_bit_base(base_model, cfg), sft_out, is_trainable=True), None
    return load_model(base_model, adapter=sft_out, trainable=True), None
