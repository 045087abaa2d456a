"""SFT training speed: this project's settings (params.yaml `sft:`) against TRL's defaults, same data, one run.

TRL defaults here mean SFTConfig as TRL ships it: no packing, gradient checkpointing on, and fp32 on a CPU (no bf16
autocast). The project's row uses params.yaml as is; two more rows flip `packing` and `gradient_checkpointing` in turn
to show what each is worth. Each
variant trains in a fresh process (so peak memory is its own), same LoRA adapter, seed and rows.

Reported per variant: tokens/s (non-padding input tokens over training time, first step left out as warm-up),
achieved model FLOP/s = 6 x parameters x tokens/s (the usual dense-transformer estimate; attention FLOPs and LoRA's
skipped weight gradients ignored), MFU = that over a peak, and peak memory (CUDA max allocated, or process peak RSS).
The peak is measured, not looked up: the best FLOP/s of large bf16 and fp32 matmuls on this machine (on a CPU there
is no reliable datasheet number to read); pass --peak-tflops to use a datasheet figure instead (H100 SXM bf16 dense:
989).

  .venv/bin/python -m benchmarks.train_speed [--model smollm2|qwen2.5-0.5b-shape] [--steps 6] [--liger]

`qwen2.5-0.5b-shape` is Qwen2.5-0.5B's architecture with random weights, built from its config (no download), with
the SmolLM2 tokenizer (its ids fit Qwen's larger vocabulary). Data: data/datasets/sft_train.jsonl (`make pipeline`).
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from tasks.config import apply_runtime_env, load_config
from tasks.paths import Paths

QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                tie_word_embeddings=True)


def peak_flops() -> tuple[float, str]:
    """Best matmul FLOP/s over bf16 and fp32 (4096^2 on a GPU, 2048^2 on a CPU), and which dtype gave it."""
    on_gpu = torch.cuda.is_available()
    n, best = (4096 if on_gpu else 2048), (0.0, "")
    for dtype in (torch.bfloat16, torch.float32):
        a = torch.randn(n, n, dtype=dtype, device="cuda" if on_gpu else "cpu")
        for _ in range(3):
            t0 = time.perf_counter()
            for _ in range(5):
                a @ a
            if on_gpu:
                torch.cuda.synchronize()
            best = max(best, (5 * 2 * n**3 / (time.perf_counter() - t0), str(dtype).split(".")[-1]))
    return best


def qwen_shape_model(tokenizer_dir: Path, out: Path) -> Path:
    """Qwen2.5-0.5B's shape, random weights, saved with the SmolLM2 tokenizer so the SFT code loads it by path."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = Qwen2Config(**QWEN_05B, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    Qwen2ForCausalLM(config).to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def run_variant(name: str, overrides: dict, bf16: bool | None, model_dir: str, steps: int, liger: bool) -> dict:
    """One variant in this (fresh) process: build the project's SFT trainer with `overrides`, train, measure."""
    from tasks.train import training
    from tasks.train.sft import build_trainer

    cfg = load_config()
    apply_runtime_env(cfg)
    if bf16 is not None:
        training.use_bf16 = lambda: bf16
    sft_cfg = cfg.sft.model_copy(update={"max_steps": steps, "logging_steps": 1, "eval_steps": 10**6,
                                         "save_steps": 0, **overrides})
    tmp = Path("/tmp/train_speed") / name.replace(" ", "_")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer = build_trainer(sft_cfg, cfg.runtime.seed, Path(model_dir), Paths.sft_train, Paths.sft_test, tmp)
    if liger:
        trainer.args.use_liger_kernel = True
    meter = training.StepMetrics()
    trainer.callback_handler.callbacks.insert(0, meter)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"variant": name, "packing": sft_cfg.packing, "grad_ckpt": sft_cfg.gradient_checkpointing,
            "bf16": trainer.args.bf16, "tokens_per_s": meter.tokens_per_s(skip_first=1),
            "s_per_step": sum(h["seconds"] for h in meter.history[1:]) / max(1, len(meter.history) - 1),
            "peak_mem_mb": training.peak_memory_mb(), "last_loss": losses[-1],
            "params": trainer.model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["smollm2", "qwen2.5-0.5b-shape"], default="smollm2")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--liger", action="store_true", help="Liger kernels (CUDA, needs liger-kernel installed)")
    parser.add_argument("--peak-tflops", type=float, help="peak to compute MFU against instead of the measured one")
    args = parser.parse_args()
    cfg = load_config()
    apply_runtime_env(cfg)
    if args.liger:
        import importlib.util

        if not torch.cuda.is_available() or importlib.util.find_spec("liger_kernel") is None:
            parser.error("--liger needs CUDA and `pip install liger-kernel`")
    model_dir = Paths.base_model if args.model == "smollm2" else qwen_shape_model(
        Paths.base_model, Path("/tmp/train_speed/qwen2.5-0.5b-shape"))
    project = cfg.sft
    variants = [("TRL defaults", {"packing": False, "gradient_checkpointing": True}, False),
                ("this project", {}, None),
                *[(f"project, {short}={not getattr(project, key)}", {key: not getattr(project, key)}, None)
                  for key, short in (("packing", "packing"), ("gradient_checkpointing", "grad ckpt"))]]
    rows = []
    for name, overrides, bf16 in variants:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            rows.append(pool.submit(run_variant, name, overrides, bf16, str(model_dir), args.steps,
                                    args.liger).result())
    peak, peak_dtype = (args.peak_tflops * 1e12, "given") if args.peak_tflops else peak_flops()

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU x{torch.get_num_threads()} threads"
    print(f"\n{args.model} ({rows[0]['params'] / 1e6:.0f}M params), {device}, {args.steps} steps of batch "
          f"{project.per_device_batch_size}, max_length {project.max_length}; peak {peak / 1e12:.2f} TFLOP/s "
          f"({'measured ' + peak_dtype + ' matmul' if peak_dtype != 'given' else 'given'})")
    header = f"{'':<26}" + "".join(f"{r['variant']:>26}" for r in rows)
    print(header)
    lines = [("packing", lambda r: str(r["packing"])), ("gradient checkpointing", lambda r: str(r["grad_ckpt"])),
             ("bf16 autocast", lambda r: str(r["bf16"])), ("s / step", lambda r: f"{r['s_per_step']:.2f}"),
             ("tokens / s", lambda r: f"{r['tokens_per_s']:.0f}"),
             ("model TFLOP/s (6ND)", lambda r: f"{6 * r['params'] * r['tokens_per_s'] / 1e12:.3f}"),
             ("MFU", lambda r: f"{6 * r['params'] * r['tokens_per_s'] / peak:.1%}"),
             ("peak memory MB", lambda r: f"{r['peak_mem_mb']:.0f}"),
             ("last loss", lambda r: f"{r['last_loss']:.3f}")]
    for label, cell in lines:
        print(f"{label:<26}" + "".join(f"{cell(r):>26}" for r in rows))
    base = rows[0]["tokens_per_s"]
    print(f"{'tokens/s vs TRL defaults':<26}" + "".join(f"{r['tokens_per_s'] / base:>25.2f}x" for r in rows))
    Path("/tmp/train_speed/results.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
