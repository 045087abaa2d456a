"""Decontamination: find training rows that contain an evaluation example.

An eval example is a set of word n-grams (GPT-3's contamination study used 13-grams); a training row contains it to
the degree `containment` = (the example's distinct n-grams found in the row) / (its distinct n-grams). The clean
stage drops a row whose containment of any eval example reaches `min_containment`. Containment, not Jaccard: a long
training conversation that embeds a short test conversation is contaminated however much else it holds.

Text is normalised before n-grams are taken: NFKC, case-folded, punctuation and whitespace are separators, and each
Han/kana character is a word (tasks/quality.words, the tokenizer the quality filters use). N-grams stay inside one
turn (conversation_text's `role: ` lines) and role labels are not words: a test question pasted into a longer
prompt, or a test answer that a training reply opens with "Sure.", is contained whole, while n-grams spanning the
turn boundary would have missed. N-grams are hashed to 64-bit ints; the index is a sorted array of (n-gram, eval
example) pairs behind a bitmap prefilter, so a row costs one tokenisation and a few vector lookups whatever the
number of eval examples.

An eval example whose longest turn is shorter than `ngram` words is indexed by its MIN_WORDS-grams (8, or ngram if
smaller) instead: one extra n-gram length serves all short examples. One with no turn of that many words is left
out: a handful of words ("Hello! How can I help you today?") recurs in unrelated rows by coincidence.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterable
from functools import cached_property
from pathlib import Path

import numpy as np

from tasks.config import DecontaminationConfig
from tasks.data.minhash import mix
from tasks.data.words import words

_TURN = re.compile(r"^(?:user|assistant|system): ", re.MULTILINE)   # conversation_text's turn starts
MIN_WORDS = 8     # n-gram length for eval examples whose turns are all shorter than ngram words
_SEEN_BITS = 24   # smallest prefilter: 2^24 bits, 2 MiB


def turn_words(text: str) -> tuple[np.ndarray, np.ndarray]:
    """(hash, turn) of every normalised word (NFKC, case-folded, punctuation dropped). Turns are split at the
    `role: ` line starts that conversation_text writes, and the role labels are not words."""
    turns = [(t if t.isascii() else unicodedata.normalize("NFKC", t).casefold()).encode() for t in _TURN.split(text)]
    w = words(b"\n".join(turns))
    return w.hash, np.searchsorted(np.cumsum([len(t) + 1 for t in turns]), w.start, side="right")


def ngram_hashes(hashes: np.ndarray, turn: np.ndarray, n: int) -> np.ndarray:
    """Hash of every run of n consecutive words within one turn."""
    count = len(hashes) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64)
    weights = mix(np.arange(1, n + 1, dtype=np.uint64)) | np.uint64(1)   # odd: one multiplier per position
    grams = hashes[:count] * weights[0]
    for k in range(1, n):
        grams += hashes[k:k + count] * weights[k]
    return mix(grams)[turn[:count] == turn[n - 1:]]


def conversation_text(messages: list[dict]) -> str:
    """A conversation as the clean stage writes it for deduplication and decontamination."""
    return "\n".join(f"{m['role']}: {m['content']}" for m in messages)


def eval_texts_from(path: str | Path) -> list[str]:
    """The examples of a JSONL eval set: per line, `messages` (a list of {role, content}: joined as role: content
    lines) or `text` (a string)."""
    texts = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
            if isinstance(row, dict) and isinstance(row.get("messages"), list) and all(
                    isinstance(m, dict) and isinstance(m.get("content"), str) and "role" in m for m in row["messages"]):
                texts.append(conversation_text(row["messages"]))
            elif isinstance(row, dict) and isinstance(row.get("text"), str):
                texts.append(row["text"])
            else:
                raise ValueError(f"{path}:{number}: an eval example needs `messages` (a list of {{role, content}}) "
                                 "or `text` (a string)")
    if not texts:
        raise ValueError(f"{path}: no eval examples")
    return texts


class Decontaminator:
    """Which eval example a text contains most, and how much of it. Plain numpy arrays: pickles to workers."""

    def __init__(self, eval_texts: Iterable[str], cfg: DecontaminationConfig):
        pairs: dict[int, list[tuple[np.ndarray, int]]] = {}   # n-gram length -> [(distinct n-grams, example)]
        sizes = []
        for example, text in enumerate(eval_texts):
            hashes, turn = turn_words(text)
            longest = np.bincount(turn).max() if len(turn) else 0
            n = cfg.ngram if longest >= cfg.ngram else min(MIN_WORDS, cfg.ngram)
            grams = np.unique(ngram_hashes(hashes, turn, n))
            sizes.append(len(grams))
            if len(grams):
                pairs.setdefault(n, []).append((grams, example))
        self.sizes = np.array(sizes, np.int64)
        self.index = {}                                        # n -> (sorted n-grams, example of each)
        for n, items in pairs.items():
            keys = np.concatenate([g for g, _ in items])
            owners = np.concatenate([np.full(len(g), e, np.int32) for g, e in items])
            order = np.argsort(keys)
            self.index[n] = (keys[order], owners[order])

    @cached_property
    def _seen(self) -> tuple[np.ndarray, np.uint64]:
        """A bitmap of the indexed n-grams' top bits (and the shift that gives them): rules out nearly all of a row's
        n-grams without a binary search (2.5x faster on the corpus). 16 bits per indexed n-gram, 2^24 at least, so it
        stays selective as the held-out set grows with the corpus (a fixed 2^24 was 95% full at 64x the corpus and
        the finish pass grew 2x faster than the corpus). Built on first use, in the worker, and never pickled."""
        total = sum(len(keys) for keys, _ in self.index.values())
        bits = min(max(_SEEN_BITS, math.ceil(math.log2(max(total, 1))) + 4), 36)
        seen, shift = np.zeros(1 << (bits - 3), np.uint8), np.uint64(64 - bits)
        for keys, _ in self.index.values():
            top = np.unique(keys >> shift)
            byte = top >> np.uint64(3)
            starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
            flags = np.left_shift(np.uint8(1), (top & np.uint64(7)).astype(np.uint8))
            seen[byte[starts]] |= np.add.reduceat(flags, starts, dtype=np.uint8)   # distinct bits: sum = or
        return seen, shift

    def _maybe_indexed(self, grams: np.ndarray) -> np.ndarray:
        seen, shift = self._seen
        top = grams >> shift
        return (np.right_shift(seen[top >> np.uint64(3)], (top & np.uint64(7)).astype(np.uint8)) & 1).astype(bool)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_seen"}

    def match(self, text: str) -> tuple[float, int] | None:
        """(containment, eval example) of the example the text contains most; None if it shares no n-gram. Costs
        what the text's n-grams and their hits cost, not the number of eval examples."""
        hashes, turn = turn_words(text)
        hits = []
        for n, (keys, owners) in self.index.items():
            grams = ngram_hashes(hashes, turn, n)
            grams = np.unique(grams[self._maybe_indexed(grams)])
            lo = np.searchsorted(keys, grams, "left")
            hit = keys[np.minimum(lo, len(keys) - 1)] == grams
            if not hit.any():
                continue
            lo, hi = lo[hit], np.searchsorted(keys, grams[hit], "right")
            counts = hi - lo                                   # examples sharing each n-gram
            pos = np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(counts.sum())
            hits.append(owners[pos])
        if not hits:
            return None
        examples, found = np.unique(np.concatenate(hits), return_counts=True)
        score = found / np.maximum(self.sizes[examples], 1)
        best = int(score.argmax())
        return float(score[best]), int(examples[best])

    def containment(self, text: str) -> float:
        """The largest fraction of any eval example's n-grams found in the text."""
        found = self.match(text)
        return found[0] if found else 0.0
