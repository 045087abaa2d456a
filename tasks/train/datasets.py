"""Stage 4: train/test split, the SFT set (`messages`) and the preference prompts (`prompt`/`chosen`).

The split is by a hash of the conversation id, so it is stable when the corpus grows: a conversation never moves
from test into train. No preference data ships offline, so pairs are synthetic: `chosen` is the reference reply of
a conversation's first exchange, and the pairs stage (tasks/train/pairs.py) samples `rejected` from the SFT model;
where served users said which reply was worse (a feedback source: tasks/data/feedback.py), those pairs come first.
With weights on more than one source (`ingest.sources`), the SFT train set takes each source's share of it; the
preference prompts are the train set's first, as without weights, so they follow the mix approximately.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from operator import itemgetter
from pathlib import Path

from tqdm import tqdm

from tasks.common.jsonl import read_jsonl, write_jsonl
from tasks.common.modeling import load_tokenizer
from tasks.config import DatasetsConfig, SourceConfig
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


def _first_reply(messages: list[dict]) -> int:
    return next(i for i, m in enumerate(messages) if m["role"] == "assistant")


def mix_weights(sources: list[SourceConfig]) -> dict[str, float] | None:
    """The sources' weights by name when there is a mix to make: more than one source, each with a weight."""
    return {s.label: s.weight for s in sources} if len(sources) > 1 and sources[0].weight else None


def shares(size: int, weights: dict[str, float]) -> dict[str, int]:
    """`size` split by `weights`, largest remainder first (ties to the earlier source): the shares sum to `size`."""
    total = sum(weights.values())
    exact = {name: size * weight / total for name, weight in weights.items()}
    out = {name: int(share) for name, share in exact.items()}
    for name in sorted(exact, key=lambda n: out[n] - exact[n])[:size - sum(out.values())]:
        out[name] += 1
    return out


def largest_mix(available: Counter, weights: dict[str, float]) -> int:
    """The largest size whose shares every source can fill: down from the first size at which one source's share
    is sure to be over what it has."""
    total = sum(weights.values())
    size = int(min((available[name] + 1) * total / weight for name, weight in weights.items()))
    while size and any(share > available[name] for name, share in shares(size, weights).items()):
        size -= 1
    return size


def select(rows: list[dict], cfg: DatasetsConfig, tokenizer, quotas: dict, pool: Callable[[dict], object]
           ) -> tuple[list[dict], list[dict]]:
    """The conversations that fit, in `rows` order: the test split's first sft_test_size + pref_test_size, and of
    the train split each pool's quota (`pool(row)`: the row's source, or one pool for all). Tokenising is the cost, so
    it stops once every split is full."""
    want_test, train, test, taken = cfg.sft_test_size + cfg.pref_test_size, [], [], Counter()
    for row in tqdm(rows, desc="select", unit="conv"):
        in_test, key = in_test_split(row["id"], cfg.test_fraction), pool(row)
        if len(test) >= want_test if in_test else taken[key] >= quotas[key]:
            if len(test) >= want_test and all(taken[k] >= quota for k, quota in quotas.items()):
                break
            continue
        messages = fitting_messages(row["messages"], tokenizer, cfg.max_tokens)
        if messages:
            kept = {"id": row["id"], "messages": messages}
            if row.get("rejected") and len(messages) == len(row["messages"]):   # its pair is whole: kept with it
                kept["rejected"] = row["rejected"]
            (test if in_test else train).append(kept)
            taken[key] += not in_test
    return train, test


def mixed(rows: list[dict], cfg: DatasetsConfig, tokenizer, weights: dict[str, float], source_of: dict[str, str]
          ) -> tuple[list[dict], list[dict]]:
    """The splits with the train set at the sources' shares of sft_train_size, or, when that is 0, of the largest
    size every source can fill. A source short of its share of a size asked for is an error naming it."""
    source = itemgetter("source")
    if cfg.sft_train_size:
        quotas = shares(cfg.sft_train_size, weights)
        train, test = select(rows, cfg, tokenizer, quotas, source)
        got = Counter(source_of[r["id"]] for r in train)
        if all(got[name] >= quota for name, quota in quotas.items()):
            return train, test
    train, test = select(rows, cfg, tokenizer, dict.fromkeys(weights, len(rows)), source)   # every one that fits
    available = Counter(source_of[r["id"]] for r in train)
    size = largest_mix(available, weights)
    if cfg.sft_train_size:
        short = [name for name, quota in quotas.items() if available[name] < quota]
        name = min(short, key=lambda n: available[n] / quotas[n])
        raise ValueError(f"datasets.sft_train_size={cfg.sft_train_size}: source {name!r} has {available[name]} "
                         f"training conversations that fit datasets.max_tokens={cfg.max_tokens}, short of its share "
                         f"of {quotas[name]} at weight {weights[name]}; the mix allows at most {size} "
                         f"(sft_train_size 0 takes that many)")
    quotas, taken, kept = shares(size, weights), Counter(), []
    for r in train:
        name = source_of[r["id"]]
        taken[name] += 1
        if taken[name] <= quotas[name]:
            kept.append(r)
    return kept, test


def build_datasets(cfg: DatasetsConfig, seed: int, base_model: Path = Paths.base_model, src: Path = Paths.clean,
                   out_dir: Path = Paths.datasets_dir, weights: dict[str, float] | None = None) -> dict:
    """The four files and their sizes, in all and by source. `weights`: the mix of the train set (`mix_weights`)."""
    tokenizer = load_tokenizer(base_model)
    rng = random.Random(seed)
    rows = list(read_jsonl(src))
    source_of = {row["id"]: row["source"] for row in rows}
    rng.shuffle(rows)
    if weights:
        train, test = mixed(rows, cfg, tokenizer, weights, source_of)
    else:
        train, test = select(rows, cfg, tokenizer, {None: cfg.sft_train_size or len(rows)}, lambda row: None)
    if len(test) < cfg.sft_test_size + cfg.pref_test_size or len(train) < cfg.pref_train_size:
        raise ValueError(f"too few conversations fit datasets.max_tokens={cfg.max_tokens}: "
                         f"{len(train)} train, {len(test)} test")

    def pairs_from(convs: list[dict], n: int) -> list[dict]:
        """The first `n` conversations' preference prompts, those with a user's own worse reply first: their last
        exchange with both replies; the others' first exchange, the pairs stage sampling its rejected reply."""
        convs = sorted(convs, key=lambda c: "rejected" not in c)[:n]
        return [{"id": c["id"], "prompt": c["messages"][:-1], "chosen": [c["messages"][-1]],
                 "rejected": [{"role": "assistant", "content": c["rejected"]}]} if "rejected" in c else
                {"id": c["id"], "prompt": m[:-1], "chosen": [m[-1]]}
                for c, m in ((c, c["messages"][:_first_reply(c["messages"]) + 1]) for c in convs)]

    files = {Paths.sft_train: train, Paths.sft_test: test[:cfg.sft_test_size],
             Paths.pref_prompts_train: pairs_from(train, cfg.pref_train_size),
             Paths.pref_prompts_test: pairs_from(test[cfg.sft_test_size:], cfg.pref_test_size)}
    counts = {path.stem: write_jsonl(out_dir / path.name, written) for path, written in files.items()}
    by_source = {name: dict.fromkeys(counts, 0) for name in dict.fromkeys(source_of.values())}
    for path, written in files.items():
        for row in written:
            by_source[source_of[row["id"]]][path.stem] += 1
    return counts | {"by_source": by_source}
