"""Tiny randomly initialised models of the families vLLM serves on a CPU, each with a chat template in its family's
own style, written here for the tests (issue 22): the pipeline must train, quantize, serve and evaluate more than
SmolLM2's Llama + ChatML.

`build(family, out_dir, tokenizer_dir)` writes a model folder that `base_model.source` takes as a local path: a
2-layer model of the family's architecture (hidden 128, head_dim 64: a head size vLLM's CPU attention has kernels
for, vllm/v1/attention/backends/cpu_attn.py), random weights from a fixed seed, and SmolLM2's BPE tokenizer with the
family's special tokens added, its end-of-turn token as eos and pad, the vocabulary padded to a multiple of 64.

Each family has two templates that render the same text: `template` (the family's style, no generation markers, as
real checkpoints ship: what `build` saves) and `marked` (each reply and its end-of-turn token in
`{% generation %}...{% endgeneration %}`): the mask SFT derives from the first must be the one the second marks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SEED = 0
HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS, HEAD_DIM = 128, 256, 2, 2, 1, 64
MAX_POSITIONS = 4096          # >= evaluate's judge context (evaluate.judge.max_model_len)
VOCAB_MULTIPLE = 64
GEN, END_GEN = "{% generation %}", "{% endgeneration %}"


def unmarked(template: str) -> str:
    return template.replace(GEN, "").replace(END_GEN, "")


# Qwen2: ChatML, with Qwen's own default system prompt when the conversation has none; no bos token.
QWEN2 = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}" + GEN + "{{- message['content'] + '<|im_end|>' }}" + END_GEN + "{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

# Gemma: no system role (a system message is folded into the first user turn), the assistant is `model`, contents
# trimmed, <bos> first.
GEMMA = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set first_user_prefix = messages[0]['content'] | trim + '\n\n' %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set first_user_prefix = '' %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<start_of_turn>model\n' }}" + GEN + "{{- message['content'] | trim + '<end_of_turn>' }}" + END_GEN
    + "{{- '\n' }}"
    "{%- else %}"
    "{{- '<start_of_turn>user\n' + (first_user_prefix if loop.first else '') + message['content'] | trim"
    " + '<end_of_turn>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\n' }}{%- endif %}"
)

# Phi-3: role tags on their own line, <|end|> closes each turn, and a finished conversation (no generation prompt)
# ends with <|endoftext|>, as Phi-3-mini's template does.
PHI3 = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|assistant|>\n' }}" + GEN + "{{- message['content'] + '<|end|>' }}" + END_GEN + "{{- '\n' }}"
    "{%- else %}"
    "{{- '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|assistant|>\n' }}{%- else %}{{- '<|endoftext|>' }}{%- endif %}"
)

# Mistral: [INST] ... [/INST] around each user turn (a system message joins the first one), the reply right after
# [/INST] and closed by </s>, <s> first; the prompt needs no generation prompt.
MISTRAL = (
    "{{- bos_token }}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system = messages[0]['content'] + '\n\n' %}"
    "{%- set loop_messages = messages[1:] %}"
    "{%- else %}"
    "{%- set system = '' %}"
    "{%- set loop_messages = messages %}"
    "{%- endif %}"
    "{%- for message in loop_messages %}"
    "{%- if message['role'] == 'assistant' %}"
    + GEN + "{{- message['content'] + eos_token }}" + END_GEN +
    "{%- else %}"
    "{{- '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{%- endif %}"
    "{%- endfor %}"
)


@dataclass(frozen=True)
class Family:
    name: str
    config_class: str             # the transformers config class
    architecture: str             # what config.json's `architectures` names, what vLLM's model registry looks up
    marked: str                   # the template with generation markers
    eos: str                      # end of turn: eos and pad
    bos: str | None               # None: the family has no bos token
    added: tuple[str, ...]        # special tokens added to SmolLM2's tokenizer
    config: dict = field(default_factory=dict)   # the family's own config keys beside the shared tiny sizes
    norm_offset: float = 0.0      # its RMSNorm scales by norm_offset + weight (Gemma: 1 + weight)

    @property
    def template(self) -> str:
        return unmarked(self.marked)


FAMILIES = {f.name: f for f in [
    Family("qwen2", "Qwen2Config", "Qwen2ForCausalLM", QWEN2, "<|im_end|>", None, (),
           {"tie_word_embeddings": True, "use_sliding_window": False}),
    Family("gemma", "GemmaConfig", "GemmaForCausalLM", GEMMA, "<end_of_turn>", "<bos>",
           ("<bos>", "<start_of_turn>", "<end_of_turn>"), {"hidden_act": "gelu_pytorch_tanh"}, 1.0),
    Family("phi3", "Phi3Config", "Phi3ForCausalLM", PHI3, "<|end|>", None,
           ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
           {"original_max_position_embeddings": MAX_POSITIONS}),
    Family("mistral", "MistralConfig", "MistralForCausalLM", MISTRAL, "</s>", "<s>",
           ("<s>", "</s>", "[INST]", "[/INST]"), {"sliding_window": None}),
    # Gemma 2 and 3: attention logit soft-capping (2), sliding-window layers beside global ones (both), q/k norms (3)
    Family("gemma2", "Gemma2Config", "Gemma2ForCausalLM", GEMMA, "<end_of_turn>", "<bos>",
           ("<bos>", "<start_of_turn>", "<end_of_turn>"),
           {"sliding_window": 128, "query_pre_attn_scalar": HEAD_DIM,
            "layer_types": ["sliding_attention", "full_attention"]}, 1.0),
    Family("gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM", GEMMA, "<end_of_turn>", "<bos>",
           ("<bos>", "<start_of_turn>", "<end_of_turn>"),
           {"sliding_window": 128, "query_pre_attn_scalar": HEAD_DIM,
            "layer_types": ["sliding_attention", "full_attention"]}, 1.0),
]}


def tokenizer_for(family: Family, tokenizer_dir: Path, marked: bool = False):
    """SmolLM2's tokenizer from `tokenizer_dir` (a base model folder) dressed as `family`'s."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if family.added:
        tokenizer.add_special_tokens({"additional_special_tokens": list(family.added)})
    tokenizer.bos_token = family.bos
    tokenizer.eos_token = tokenizer.pad_token = family.eos
    tokenizer.chat_template = family.marked if marked else family.template
    return tokenizer


def build(family: str, out_dir: Path, tokenizer_dir: Path, marked: bool = False, seed: int = SEED) -> Path:
    """A tiny random `family` model with its tokenizer and template, saved in `out_dir` (bf16, as base_model saves)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    fam = FAMILIES[family]
    tokenizer = tokenizer_for(fam, tokenizer_dir, marked)
    vocab = -(-len(tokenizer) // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = getattr(transformers, fam.config_class)(
        vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=HEAD_DIM,
        max_position_embeddings=MAX_POSITIONS, architectures=[fam.architecture], **ids, **fam.config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(**ids)
    if config.tie_word_embeddings:
        # Random weights with tied embeddings answer with their last token again ("\n\n\n..." after the generation
        # prompt: the residual stream is the token's own embedding, and so is its output row), which the smoke test
        # refuses as an empty answer. The final norm negated (Gemma's norms scale by 1 + weight) makes that token
        # the least likely, and the answer random words.
        norm = model.model.norm.weight
        with torch.no_grad():
            norm.copy_(-2 * fam.norm_offset - norm)
    out_dir = Path(out_dir)
    model.to(torch.bfloat16).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
