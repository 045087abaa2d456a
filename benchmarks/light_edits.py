"""Corpora for benchmarks/dedup.py, from the ShareGPT package that installs offline: real text, planted near-duplicates.

- English: 200-word windows of ShareGPT replies.
- Chinese: the package holds only ~11k characters of Chinese (69 turns that are mostly Han script), too few documents
  for a precision figure, so documents are its ~240 distinct Chinese sentences drawn at random, 200-500 characters
  each: real sentences, and unrelated documents that share some of them (hard negatives).
Light edits are what a reader would still call the same text: in English a few commas, capitals and punctuation
marks; in Chinese 2-4% of characters, particles (的 了 是 ...) and punctuation inserted or deleted and characters
switched between full and half width.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator

from tasks.data.ingest import _json_array_records, sharegpt_package_file

PARTICLES = "的了是在也就都而及与着"
ZH_MARKS = "，。、！？；：“”"
_WIDE = "，。！？；：０１２３４５６７８９"     # full-width forms and their half-width partners, position by position
_NARROW = ",.!?;:0123456789"
_SWAP = str.maketrans(_WIDE + _NARROW, _NARROW + _WIDE)
_HAN = re.compile(r"[\u4e00-\u9fff]")
_SENTENCE_END = re.compile(r"(?<=[。！？\n])")


def _turns() -> Iterator[str]:
    """Every turn of the packaged ShareGPT file, in order."""
    for record, reason in _json_array_records(sharegpt_package_file()):
        if reason is None:
            yield from (str(turn.get("value", "")) for turn in record.get("conversations", []))


def english_windows(count: int, words: int = 200) -> list[str]:
    """The first `count` windows of `words` words, cut from consecutive ShareGPT turns."""
    windows = []
    for turn in _turns():
        split = turn.split()
        windows += [" ".join(split[i:i + words]) for i in range(0, len(split) - words + 1, words)]
        if len(windows) >= count:
            break
    return windows[:count]


def chinese_sentences() -> list[str]:
    """Distinct sentences of at least 10 characters, mostly Han, from turns that are mostly Han."""
    sentences = {}
    for turn in _turns():
        if len(_HAN.findall(turn)) < 0.5 * max(len(turn), 1):
            continue
        for sentence in _SENTENCE_END.split(turn):
            sentence = sentence.strip()
            if len(sentence) >= 10 and len(_HAN.findall(sentence)) >= 0.6 * len(sentence):
                sentences[sentence] = None
    return list(sentences)


def chinese_documents(count: int, rng: random.Random) -> list[str]:
    sentences, docs = chinese_sentences(), []
    for _ in range(count):
        doc, size = [], rng.randint(200, 500)
        while sum(map(len, doc)) < size:
            doc.append(rng.choice(sentences))
        docs.append("".join(doc))
    return docs


def edit_chinese(text: str, rng: random.Random) -> str:
    """2-4% of characters: a particle or punctuation mark inserted or deleted, or a character's width switched."""
    chars = list(text)
    for _ in range(max(1, round(len(chars) * rng.uniform(0.02, 0.04)))):
        op = rng.choice(("insert particle", "insert mark", "delete", "width"))
        if op == "delete":
            at = [i for i, c in enumerate(chars) if c in PARTICLES + ZH_MARKS]
            if at:
                del chars[rng.choice(at)]
        elif op == "width":
            at = [i for i, c in enumerate(chars) if c in _WIDE + _NARROW]
            if at:
                i = rng.choice(at)
                chars[i] = chars[i].translate(_SWAP)
        else:
            chars.insert(rng.randrange(len(chars) + 1), rng.choice(PARTICLES if op == "insert particle" else ZH_MARKS))
    return "".join(chars)


def edit_english(text: str, rng: random.Random) -> str:
    """2-4% of words: a comma added or a trailing mark removed, a capital changed, a word shouted or quoted."""
    words = text.split()
    for i in rng.sample(range(len(words)), max(1, round(len(words) * rng.uniform(0.02, 0.04)))):
        word, op = words[i], rng.choice(("comma", "strip", "capital", "upper", "quote"))
        words[i] = {"comma": word + ",", "strip": word.rstrip(".,;:!?"), "capital": word.swapcase()[:1] + word[1:],
                    "upper": word.upper(), "quote": f'"{word}"'}[op]
    return " ".join(words)


def plant(texts: list[str], planted: int, edit: Callable[[str, random.Random], str],
          rng: random.Random) -> tuple[list[str], list[tuple[int, int]]]:
    """`texts` plus an edited copy of `planted` of them at the end; the (original, copy) index pairs."""
    pairs = [(src, len(texts) + k) for k, src in enumerate(rng.sample(range(len(texts)), planted))]
    return texts + [edit(texts[src], rng) for src, _ in pairs], pairs


def light_edit_corpus(language: str, docs: int, planted: int,
                      seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    rng = random.Random(seed)
    if language == "English":
        return plant(english_windows(docs - planted), planted, edit_english, rng)
    return plant(chinese_documents(docs - planted, rng), planted, edit_chinese, rng)
