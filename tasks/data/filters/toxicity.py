"""Toxicity and safety filter: a multilingual blocklist and a classifier, per reply.

Two parts because neither is enough alone (labelled check: benchmarks/toxicity.py). The classifier is
alt-profanity-check (a linear SVM on TF-IDF, its model inside the wheel, offline, ~15k replies/s on one core):
it catches insults and abuse in any wording, in English only, and scores "kill the process with kill -9" 0.77, so
its threshold sits high. The blocklist covers what it cannot read (Chinese) and the unambiguous terms, as
phrases where a single word has an innocent sense. A reply is toxic if either says so; the drop reason names which,
and the audit keeps the score. The filter judges a whole chunk in one classifier call (toxic_replies).
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

from tasks.config import ToxicityConfig
from tasks.data.filters.base import Drop, Filter

BUILTIN_BLOCKLIST = Path(__file__).with_name("toxicity_blocklist.txt")
_SPACED = re.compile(r"[A-Za-z0-9' *-]+")   # terms matched as whole words; any other script matches anywhere


def read_terms(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in Path(path).read_text(encoding="utf-8").splitlines())
    return [line.lower() for line in lines if line]


class Blocklist:
    """Latin-script terms as whole words ("*" at the end: any longer word), matched by one regex on the lowercased
    text (an IGNORECASE alternation was 15x slower on ShareGPT replies); other terms as plain substrings, looked for
    only in text that is not ASCII."""

    def __init__(self, terms: list[str]):
        latin = sorted({t for t in terms if _SPACED.fullmatch(t)}, key=len, reverse=True)
        self.words = re.compile(r"\b(?:" + "|".join(
            re.escape(t.removesuffix("*")) + (r"\w*" if t.endswith("*") else r"\b") for t in latin) + ")") \
            if latin else None
        self.substrings = sorted({t for t in terms if not _SPACED.fullmatch(t)})

    def search(self, text: str) -> bool:
        lower = text.lower()
        return bool(self.words and self.words.search(lower)) or (
            not text.isascii() and any(term in lower for term in self.substrings))


@lru_cache(maxsize=4)
def blocklist(extra_file: str = "") -> Blocklist:
    return Blocklist(read_terms(BUILTIN_BLOCKLIST) + (read_terms(Path(extra_file)) if extra_file else []))


def classifier_scores(texts: list[str]) -> list[float]:
    """alt-profanity-check's probability that each text is offensive (English)."""
    from profanity_check import predict_prob

    return [float(p) for p in predict_prob(texts)] if texts else []


def toxic_replies(conversations: list[list[dict]], cfg: ToxicityConfig) -> list[tuple[str, float] | None]:
    """Per conversation: None, or (reason, score) of its most toxic message in cfg.roles. Batched: the classifier's
    cost is per call as much as per text."""
    terms = blocklist(cfg.blocklist_file)
    texts, owner = [], []
    for i, messages in enumerate(conversations):
        for m in messages:
            if m["role"] in cfg.roles:
                texts.append(m["content"])
                owner.append(i)
    scores = classifier_scores(texts) if cfg.threshold < 1 else [0.0] * len(texts)
    found: list[tuple[str, float] | None] = [None] * len(conversations)
    for i, text, score in zip(owner, texts, scores):
        reason = ("toxic_blocklist" if terms.search(text)
                  else "toxic_classifier" if score >= cfg.threshold else None)
        if reason and (found[i] is None or score > found[i][1]):
            found[i] = (reason, round(score, 4))
    return found


class Toxicity(Filter):
    name = "toxicity"

    def filter_batch(self, conversations: list[list[dict]]) -> list[Drop | None]:
        return [Drop(found[0], {"score": found[1]}) if found else None
                for found in toxic_replies(conversations, self.cfg)]


def described(cfg: ToxicityConfig) -> str:
    """The filter in one line, for the clean report."""
    terms = "built-in English and Chinese blocklist" + (f" + {cfg.blocklist_file}" if cfg.blocklist_file else "")
    return f"{terms}, alt-profanity-check >= {cfg.threshold}, on {'/'.join(cfg.roles)} messages"
