"""Stage 4: train/test split, the SFT set (`messages`) and the preference prompts (`prompt`/`chosen`).

The split is by a hash of the conversation id, so it is stable when the corpus grows: a conversation never moves
from test into train. No preference data ships offline, so pairs are synthetic: `chosen` is the reference reply of
a conversation's first exchange, and the pairs stage (tasks/train/pairs.py) samples `rejected` from the SFT model.
"""
from __future__ import annotations

import random
from pathlib import Path

from tqdm import tqdm

from tasks.common.jsonl import read_jsonl, write_jsonl
from tasks.common.modeling import load_tokenizer
from tasks.config import DatasetsConfig
from tasks.data.split import in_test_split
from tasks.paths import Paths


def fitting_messages(messages: list[dict], tokenizer, max_tokens: int) -> list[dict] | None:
    """The whole conversation if it fits, else its first user/assistant exchange if that fits, else None."""
    while messages and messages[-1]["role"] != "assistant":
        messages = messages[:-1]
    first = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), None)
    if first is None:
        return None
    for candidate in (messages, messages[:first + 1]):
        if sum(len(m["content"]) for m in candidate) > max_tokens * 8:   # cheap pre-check before tokenising
            continue
        if len(tokenizer.apply_chat_template(candidate, tokenize=True)) <= max_tokens:
            return candidate
    return None


def build_datasets(cfg: DatasetsConfig, seed: int, base_model: Path = Paths.base_model,
                   src: Path = Paths.clean, out_dir: Path = Paths.datasets_dir) -> dict:
    tokenizer = load_tokenizer(base_model)
    rng = random.Random(seed)
    rows = list(read_jsonl(src))
    rng.shuffle(rows)
    train, test = [], []
    want_train = cfg.sft_train_size or len(rows)
    for row in tqdm(rows, desc="select", unit="conv"):
        split = test if in_test_split(row["id"], cfg.test_fraction) else train
        if len(split) >= (cfg.sft_test_size + cfg.pref_test_size if split is test else want_train):
            if len(train) >= want_train and len(test) >= cfg.sft_test_size + cfg.pref_test_size:
                break
            continue
        messages = fitting_messages(row["messages"], tokenizer, cfg.max_tokens)
        if messages:
            split.append({"id": row["id"], "messages": messages})
    if len(test) < cfg.sft_test_size + cfg.pref_test_size or len(train) < cfg.pref_train_size:
        raise ValueError(f"too few conversations fit datasets.max_tokens={cfg.max_tokens}: "
                         f"{len(train)} train, {len(test)} test")

    def pairs_from(convs: list[dict], n: int) -> list[dict]:
        firsts = [c["messages"][:next(i for i, m in enumerate(c["messages"]) if m["role"] == "assistant") + 1]
                  for c in convs[:n]]
        return [{"id": c["id"], "prompt": m[:-1], "chosen": [m[-1]]} for c, m in zip(convs[:n], firsts)]

    pref_train = pairs_from(train, cfg.pref_train_size)
    pref_test = pairs_from(test[cfg.sft_test_size:], cfg.pref_test_size)
    return {
        "sft_train": write_jsonl(out_dir / Paths.sft_train.name, train),
        "sft_test": write_jsonl(out_dir / Paths.sft_test.name, test[:cfg.sft_test_size]),
        "pref_prompts_train": write_jsonl(out_dir / Paths.pref_prompts_train.name, pref_train),
        "pref_prompts_test": write_jsonl(out_dir / Paths.pref_prompts_test.name, pref_test),
    }
