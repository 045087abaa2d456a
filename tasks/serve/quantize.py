"""Stage 8: merge the DPO adapter into the base, then quantize with llmcompressor for the serving engine.

W8A8 int8 after SmoothQuant is the CPU default: on SmolLM2-135M it is 61% of the bytes at +0.9% held-out ppl (plain
W8A8: +2.8%, nearly all of it from int8 activations; benchmarks/quantization.py), while 4-bit W4A16 loses 30-40% at
this size, GPTQ or not. SmoothQuant and GPTQ calibrate on the first SFT training conversations. quantize.compare
measures other schemes and quantize.gguf writes a GGUF file (tasks/serve/gguf_export.py), all for the run report.

Two rules, both from measuring the same checkpoint on three x86 CPUs (issue 8):
- **Quantize in fp32 arithmetic.** Scales and int8 rounding computed on a bf16 model flip ~8% of the int8 weights
  (bf16 keeps 8 mantissa bits: `w / scale` near 127 is only known to +-0.5) and the result depends on the CPU's bf16
  kernels: +9.5% perplexity on an AVX2 EPYC, +23% on an AVX512-BF16 one, against +0.0% from fp32 arithmetic. The
  merged model is saved in the serving dtype (bf16); its bf16 weights are quantized in fp32, then the quantized
  checkpoint is stored in bf16 too.
- **Measure both sides of the ratio the same way.** `merged_ppl` and `quantized_ppl` are the same fp32 forward of the
  same in-memory model, before and after llmcompressor attaches its quantize-dequantize of weights and activations.
  Reloading the compressed checkpoint in transformers takes another code path whose figure moved by CPU; what vLLM
  serves is scored through the endpoint in the evaluate stage.
"""
from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path

import torch

from tasks.common.adapter_folder import write_adapter_folder
from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import is_adapter, load_model, load_tokenizer, perplexity
from tasks.config import QuantizeConfig
from tasks.paths import Paths
from tasks.serve.gguf_export import export_gguf, load_gguf


def folder_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def weights_only(num_bits: int, group_size: int | None, ignore: list[str], modifier=None) -> list:
    """Integer weights (per group of `group_size` columns, or per channel), activations left in float."""
    from llmcompressor.modifiers.quantization import QuantizationModifier

    strategy = {"strategy": "group", "group_size": group_size} if group_size else {"strategy": "channel"}
    weights = {"num_bits": num_bits, "type": "int", "symmetric": True, **strategy}
    return [(modifier or QuantizationModifier)(config_groups={"group_0": {"targets": ["Linear"], "weights": weights}},
                                               ignore=ignore)]


def recipe(scheme: str, cfg: QuantizeConfig) -> list:
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier
    from llmcompressor.modifiers.transform.smoothquant import SmoothQuantModifier

    if scheme == "W8A8":   # int8 activations lose most; SmoothQuant moves their outliers into the weights first
        smooth = [SmoothQuantModifier(smoothing_strength=cfg.smoothing)] if cfg.smoothing else []
        return smooth + [QuantizationModifier(targets="Linear", scheme="W8A8", ignore=cfg.ignore)]
    # GPTQ: error-correcting rounding, calibrated; otherwise round to nearest
    return weights_only(4, cfg.group_size, cfg.ignore, GPTQModifier if scheme.endswith("-GPTQ") else None)


def calibrated(scheme: str, cfg: QuantizeConfig) -> bool:
    return scheme.endswith("-GPTQ") or (scheme == "W8A8" and cfg.smoothing > 0)


def calibration_set(tokenizer, train_file: Path, size: int):
    """GPTQ's and SmoothQuant's calibration: the first `size` SFT training conversations, chat-templated as served."""
    from datasets import Dataset

    ids = [tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True)["input_ids"]
           for r, _ in zip(read_jsonl(train_file), range(size))]
    return Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids]})


def quantize_in_fp32(model, modifiers: list, calibration=None) -> None:
    """Apply `modifiers` to `model` (fp32) in place, calibrating on `calibration` when given: llmcompressor attaches
    quantize-dequantize to its weights (and activations)."""
    from llmcompressor import oneshot

    data = {"dataset": calibration, "num_calibration_samples": len(calibration),
            "max_seq_length": max(len(i) for i in calibration["input_ids"])} if calibration is not None else {}
    oneshot(model=model, recipe=modifiers, **data)


def save_compressed(model, tokenizer, out: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    """Compress while the weights are fp32 (the int8/int4 rounding happens here), then store the rest in `dtype`."""
    from compressed_tensors.compressors import ModelCompressor

    ModelCompressor.from_pretrained_model(model).compress_model(model)
    model.to(dtype)                                   # floats only: scales, norms, embeddings; int weights stay
    model.save_pretrained(out, save_compressed=True)  # already compressed modules are skipped
    tokenizer.save_pretrained(out)


def measured(model, scheme: str, cfg: QuantizeConfig, tokenizer, conversations, calibration, out: Path) -> dict:
    """`scheme` applied to `model` (fp32, in place) and saved to `out`: its size and held-out ppl."""
    quantize_in_fp32(model, recipe(scheme, cfg), calibration if calibrated(scheme, cfg) else None)
    ppl = perplexity(model, tokenizer, conversations, f"ppl {scheme} (fp32, quantize-dequantize)")
    save_compressed(model, tokenizer, out)
    return {"mb": folder_mb(out), "ppl": round(ppl, 4)}


def merge_and_quantize(cfg: QuantizeConfig, base_model: Path = Paths.base_model, adapter: Path = Paths.dpo_adapter,
                       test_file: Path = Paths.sft_test, train_file: Path = Paths.sft_train,
                       merged_dir: Path = Paths.merged, quantized_dir: Path = Paths.quantized,
                       gguf_dir: Path = Paths.gguf, lora: bool = False) -> dict:
    """The merged model, the served quantization of it, and each variant in quantize.compare and quantize.gguf
    measured the same way (size, held-out ppl through one fp32 forward) for the report. With `lora`
    (vllm.mode: lora) the served folder is the adapter on its base instead, nothing quantized: its reference ppl is
    the merged model's, which is what vLLM computes from base + adapter."""
    from transformers import AutoModelForCausalLM

    if lora and not is_adapter(adapter):
        raise ValueError(f"vllm.mode lora serves a LoRA adapter, and {adapter} is a whole model (dpo.adapter: full): "
                         "use vllm.mode merged, or train with dpo.adapter lora")

    tokenizer = load_tokenizer(base_model)
    model = load_model(base_model, adapter=adapter)        # a full fine-tune's folder loads as the whole model
    merged = (model.merge_and_unload() if is_adapter(adapter) else model).to(torch.bfloat16)   # the serving dtype
    for folder in (merged_dir, quantized_dir, gguf_dir):
        shutil.rmtree(folder, ignore_errors=True)
    gguf_dir.mkdir(parents=True)                           # a DVC output, empty when quantize.gguf is ""
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    conversations = [r["messages"] for r in read_jsonl(test_file)]
    # the saved bf16 weights in fp32 arithmetic, reloaded: casting the model in memory would also round its rotary
    # inv_freq buffer to bf16 (not saved, so not what any engine serves; measured +0.09% ppl on the test's replies)
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    merged_ppl = perplexity(merged, tokenizer, conversations, "ppl merged (fp32)")
    scheme = "lora" if lora else cfg.scheme
    schemes = [s for s in dict.fromkeys(cfg.compare) if s != scheme]
    calibration = (calibration_set(tokenizer, train_file, cfg.calibration_samples)
                   if any(calibrated(s, cfg) for s in [scheme, *schemes]) else None)
    variants = {}
    for other in schemes:                                  # before the served one, which quantizes `merged` itself
        with tempfile.TemporaryDirectory() as tmp:
            variants[other] = measured(copy.deepcopy(merged), other, cfg, tokenizer, conversations, calibration,
                                       Path(tmp) / other)
    if cfg.gguf:
        path = export_gguf(merged, merged_dir, gguf_dir / f"model-{cfg.gguf}.gguf", cfg.gguf, cfg.gguf_pre)
        variants[f"GGUF {cfg.gguf}"] = {"mb": round(path.stat().st_size / 2**20, 1), "ppl": round(
            perplexity(load_gguf(path), tokenizer, conversations, f"ppl GGUF {cfg.gguf} (fp32, dequantized)"), 4)}
    if scheme in ("none", "lora"):
        if lora:
            write_adapter_folder(adapter, base_model, quantized_dir)
        else:
            shutil.copytree(merged_dir, quantized_dir)
        variants[scheme] = {"mb": folder_mb(quantized_dir), "ppl": round(merged_ppl, 4)}
    else:
        variants[scheme] = measured(merged, scheme, cfg, tokenizer, conversations, calibration, quantized_dir)
    merged_mb, served = folder_mb(merged_dir), variants[scheme]
    for v in variants.values():
        v |= {"ppl_ratio": round(v["ppl"] / merged_ppl, 4), "size_ratio": round(v["mb"] / merged_mb, 4)}
    return {"merged_mb": merged_mb, "quantized_mb": served["mb"], "merged_ppl": round(merged_ppl, 4),
            "quantized_ppl": served["ppl"], "ppl_ratio": served["ppl_ratio"], "size_ratio": served["size_ratio"],
            "scheme": scheme, "variants": variants}
