"""Loading models and measuring them: the pieces training, merging and evaluation share."""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from tqdm import tqdm

from tasks.common.hardware import native_bf16_cpu


def device() -> str:
    """This process's GPU (`accelerate launch` sets LOCAL_RANK per process), else the CPU."""
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}" if torch.cuda.is_available() else "cpu"


def train_dtype() -> torch.dtype:
    """Weights load in bf16 on a GPU that has it, else fp32 (CPU training then autocasts matmuls, see `use_bf16`)."""
    return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32


def use_bf16() -> bool:
    """bf16 mixed precision on a bf16 GPU, or on a CPU with native bf16 (AMX / AVX512-BF16): 1.16x faster SFT steps
    than fp32 at the same loss on an AMX CPU (benchmarks/stage_speed.py); plain fp32 elsewhere (an AVX2-only CPU
    emulates bf16). Runs record which they had (tasks/common/hardware.py tags)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    return native_bf16_cpu()


def load_tokenizer(path: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer


def is_adapter(path: Path) -> bool:
    """A PEFT adapter folder, as opposed to a whole model (what `adapter: full` training saves)."""
    return (Path(path) / "adapter_config.json").exists()


def nf4_config():
    """QLoRA's 4-bit NormalFloat weights with double quantization, computing in the training dtype."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=train_dtype())


def load_model(path: Path, adapter: Path | None = None, trainable: bool = False, four_bit: bool = False):
    """The model at `path`, with `adapter` on top. An `adapter` folder holding a whole model (a full fine-tune)
    replaces the base. `four_bit` loads the weights NF4-quantized on the GPU (QLoRA)."""
    from transformers import AutoModelForCausalLM

    if adapter is not None and not is_adapter(adapter):
        path, adapter = adapter, None
    if four_bit:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=train_dtype(), quantization_config=nf4_config(),
                                                     device_map={"": device()})
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=train_dtype()).to(device())
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    return model if trainable else model.eval()


def completion_batch(tokenizer, prompt: list[dict], completion: list[dict]) -> tuple[list[int], int]:
    """Token ids of prompt+completion, and where the completion starts. The completion is tokenised on its own, as
    a served model would produce it after the prompt (BPE merges across the boundary would otherwise blur it)."""
    prompt_text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full_text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError("chat template is not prefix-preserving: the prompt renders differently once a reply follows")
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(full_text[len(prompt_text):].rstrip("\n"), add_special_tokens=False)["input_ids"]
    return prompt_ids + reply_ids, len(prompt_ids)


def reply_batches(tokenizer, conversations: list[dict]) -> list[tuple[list[int], int]]:
    """`completion_batch` of each conversation's last reply given everything before it."""
    return [completion_batch(tokenizer, *split_last_reply(c["messages"])) for c in conversations]


@torch.inference_mode()
def completion_logprobs(model, tokenizer, pairs: list[tuple[list[dict], list[dict]]]) -> list[tuple[float, int]]:
    """Sum of log-probabilities of each completion given its prompt, and its token count (one sequence at a time:
    exact, and fast enough for held-out sets of tens of examples)."""
    results = []
    for prompt, completion in pairs:
        ids, start = completion_batch(tokenizer, prompt, completion)
        input_ids = torch.tensor([ids], device=model.device)
        logits = model(input_ids=input_ids).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(1, input_ids[0, 1:, None])[:, 0]
        results.append((logp[start - 1:].sum().item(), len(ids) - start))
    return results


def split_last_reply(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    return messages[:-1], messages[-1:]


def perplexity_of(scored: list[tuple[float, int]]) -> float:
    """Perplexity from (sum of log-probabilities, token count) per completion: one token-weighted average."""
    return math.exp(-sum(s for s, _ in scored) / sum(n for _, n in scored))


def perplexity(model, tokenizer, conversations: list[list[dict]], desc: str = "perplexity") -> float:
    """Perplexity of each conversation's final assistant reply given everything before it."""
    return perplexity_of(completion_logprobs(model, tokenizer,
                                             [split_last_reply(m) for m in tqdm(conversations, desc=desc)]))


def preference_accuracies(policy, reference, tokenizer, pairs: list[dict]) -> dict[str, float]:
    """On preference pairs: how often DPO's implicit reward, log pi(y|x) - log ref(y|x), ranks chosen above rejected;
    and how often each model alone gives chosen the higher likelihood. The reference's likelihood figure is the
    baseline the DPO figures are read against (pairs share one token budget, so summed log-likelihoods compare)."""
    def logps(model, key):
        return [s for s, _ in completion_logprobs(model, tokenizer, [(p["prompt"], p[key]) for p in pairs])]

    pc, rc, pr, rr = logps(policy, "chosen"), logps(reference, "chosen"), logps(policy, "rejected"), \
        logps(reference, "rejected")

    def share(wins) -> float:
        wins = list(wins)
        return round(sum(wins) / len(wins), 4)

    return {"implicit_reward": share((a - b) - (c - d) > 0 for a, b, c, d in zip(pc, rc, pr, rr)),
            "likelihood_policy": share(a > c for a, c in zip(pc, pr)),
            "likelihood_reference": share(b > d for b, d in zip(rc, rr))}
