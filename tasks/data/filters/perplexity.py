"""Perplexity filter: score each conversation's assistant replies with a small causal LM and drop the worst tail.

The data chapters this pipeline follows score documents with a small LM (CCNet buckets by KenLM perplexity) and drop
the low-quality tail: garbled text, boilerplate dumps, machine-translated soup score far above fluent replies. Here
the LM is the base model by default (any HF causal LM folder or id): it scores what it will be trained on, in its
own chat template, so a reply is judged in its conversation. The cost is a forward pass per conversation, so it is
off by default on a 2-core CPU (not in clean.filters; measured in the clean report's seconds; see params.yaml), and
best listed last, where the cheaper filters have dropped what they can.

Its cutoff is a percentile of the scores, which no chunk can decide alone: it is a CorpusFilter, scoring in the scan
and judging once the scan is over. The scan runs before deduplication, so it also scores rows that exact and near
dedup drop later (before issue 20 it ran after them): with duplicates in the corpus the percentile is taken over a
slightly larger set, and a duplicate above the cutoff is dropped as high_perplexity, not as a duplicate.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

from tasks.common.chat_template import assistant_tokens
from tasks.config import PerplexityConfig
from tasks.data.filters.base import CorpusFilter, Drop


@lru_cache(maxsize=1)
def _model(name: str):
    """The scoring model and tokenizer, once per worker process (fp32: the same figure on every CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)   # one per worker: the executor's processes share the cores
    tokenizer = AutoTokenizer.from_pretrained(name)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32).eval(), tokenizer


def _reply_tokens(tokenizer, messages: list[dict], max_tokens: int) -> tuple[list[int], list[int]]:
    """The conversation's first `max_tokens` tokens in the chat template, and which of them are assistant replies:
    the tokens SFT trains (tasks/common/chat_template.py), so a fixed system prompt or the template's own markup
    does not dilute a reply's score."""
    ids, mask = assistant_tokens(tokenizer, messages)
    return ids[:max_tokens], mask[:max_tokens]


def reply_perplexities(conversations: list[list[dict]], cfg: PerplexityConfig) -> list[float]:
    """Per conversation, the perplexity of its assistant tokens given everything before them; batched, padded
    on the right, cfg.batch_size at a time. NaN for a conversation with no scored token."""
    import torch

    model, tokenizer = _model(cfg.model)
    encoded = [_reply_tokens(tokenizer, m, cfg.max_tokens) for m in conversations]
    scores = []
    for start in range(0, len(encoded), cfg.batch_size):
        batch = encoded[start:start + cfg.batch_size]
        width = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([i + [tokenizer.pad_token_id] * (width - len(i)) for i, _ in batch])
        scored = torch.tensor([m + [0] * (width - len(m)) for _, m in batch], dtype=torch.bool)
        attention = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i, _ in batch])
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
        target = scored[:, 1:]
        for row_nll, row_mask in zip(nll, target):
            n = int(row_mask.sum())
            scores.append(math.exp(float(row_nll[row_mask].sum()) / n) if n else float("nan"))
    return scores


def cutoff(scores: list[float], cfg: PerplexityConfig) -> float:
    """The perplexity above which a conversation is dropped: cfg.threshold, or the cfg.percentile of `scores`."""
    if cfg.threshold:
        return cfg.threshold
    finite = sorted(s for s in scores if s == s)
    if not finite:
        return math.inf
    return finite[min(len(finite) - 1, math.ceil(cfg.percentile / 100 * len(finite)) - 1)]


class Perplexity(CorpusFilter):
    name = "perplexity"

    def score_batch(self, conversations: list[list[dict]]) -> list[float]:
        return reply_perplexities(conversations, self.cfg)

    def judge(self, scores: list[float]) -> list[Drop | None]:
        limit = cutoff(scores, self.cfg)
        return [Drop("high_perplexity", {"perplexity": round(s, 2), "cutoff": round(limit, 2)}) if s > limit else None
                for s in scores]

    def plot(self, scores: list[float], path: Path) -> None:
        from tasks.common import plots

        plots.histogram([math.log10(s) for s in scores if not math.isnan(s)], path,
                        f"Reply perplexity under {self.cfg.model}", "log10 perplexity", bins_range=None)
