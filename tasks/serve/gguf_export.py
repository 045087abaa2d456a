"""The merged model as one GGUF file for llama.cpp, Ollama and LM Studio users, and what its quantization costs.

Written here, not by llama.cpp's converter: the `gguf` package on PyPI (llama.cpp's gguf-py) has the file format and
numpy quantizers (Q8_0, Q4_0/1, Q5_0/1, BF16) but not `convert_hf_to_gguf.py`, which lives in the llama.cpp repository
and is not installable offline. The LLaMA layout (SmolLM2, Llama, and the like) is small: architecture keys from
config.json, the BPE vocabulary and merges, tensors under gguf's own name map, and the q/k rows permuted the way
llama.cpp's rotary embedding reads them. Another architecture gets an error naming the converter to use.

The file is checked by reading it back with transformers' GGUF loader (it undoes the permutation and dequantizes):
its held-out perplexity, through the same fp32 forward as the merged model's, is the cost of the weights' rounding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

GGUF_TYPES = ("F32", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0")   # those gguf quantizes in numpy


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF's q/k rows (halves of each head's rotary pairs) in llama.cpp's order (pairs interleaved)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def vocabulary(tokenizer, writer, pre: str) -> None:
    import gguf

    vocab = tokenizer.get_vocab()
    if len(set(vocab.values())) != len(vocab) or max(vocab.values()) != len(vocab) - 1:
        raise ValueError("the tokenizer's ids are not one contiguous range: use llama.cpp's convert_hf_to_gguf.py")
    added = tokenizer.added_tokens_decoder
    types = [gguf.TokenType.NORMAL] * len(vocab)
    for i, token in added.items():
        types[i] = gguf.TokenType.CONTROL if token.special else gguf.TokenType.USER_DEFINED
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list([t for t, _ in sorted(vocab.items(), key=lambda item: item[1])])
    writer.add_token_types(types)


def export_gguf(model, tokenizer_dir: Path, out: Path, qtype: str, pre: str) -> Path:
    """Write `model` (a LLaMA-architecture HF model, fp32; its tokenizer saved in `tokenizer_dir`) as `out` with its
    2-D weights in `qtype`."""
    import gguf
    from transformers import AutoTokenizer

    config = model.config
    if config.model_type != "llama":
        raise ValueError(f"GGUF export here covers LLaMA-architecture models; {config.model_type!r} needs llama.cpp's "
                         "convert_hf_to_gguf.py (set quantize.gguf to '' to skip the export)")
    n_head, n_kv = config.num_attention_heads, config.num_key_value_heads
    quant = gguf.GGMLQuantizationType[qtype]
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out, "llama")
    writer.add_name(tokenizer_dir.name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(config.hidden_size // n_head)
    writer.add_rope_freq_base(getattr(config, "rope_theta", None) or config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(getattr(gguf.LlamaFileType, f"MOSTLY_{qtype}", gguf.LlamaFileType.ALL_F32))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    vocabulary(AutoTokenizer.from_pretrained(tokenizer_dir), writer, pre)
    gguf.SpecialVocab(tokenizer_dir, load_merges=True).add_to_gguf(writer, quiet=True)   # merges, special ids, template

    names = gguf.TensorNameMap(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue                                   # llama.cpp reads the tied output from token_embd
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ValueError(f"no GGUF name for {name}: use llama.cpp's convert_hf_to_gguf.py")
        data = tensor.float().numpy()
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            data = permute_rows(data, n_head if "q_proj" in name else n_kv)
        if data.ndim == 1 or quant == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(target, data.astype(np.float32))
        else:
            writer.add_tensor(target, gguf.quants.quantize(data, quant), raw_dtype=quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def load_gguf(path: Path):
    """The file as transformers reads it (fp32, dequantized): what its weights are, whatever engine runs them."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
