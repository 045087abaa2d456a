"""The quality filter: structural checks and Gopher statistics on one conversation, each a reason to drop or None.

The structural filters look at the whole conversation. The Gopher statistics (Rae et al. 2021) were tuned on web
pages; here they are adapted to chat data:
- they judge each assistant reply on its own, because replies are what the model learns to write (SFT uses
  assistant_only_loss) and a repetition loop in one reply would be diluted in a long conversation; user turns are
  prompts, where pasted logs, data and keyword lists are legitimate input;
- fenced code blocks are removed first ("prose"): code repeats lines, n-grams and `#` by nature;
- markdown heading markers do not count as `#` symbols, and words are runs of letters and digits, so the pipes and
  dashes of markdown tables are not words;
- a reply shorter than MIN_WORDS words is not judged (Gopher's own minimum document length);
- the duplicate-line fraction counts characters, not lines, so repeated short list items ("* Yes", "Chorus:") weigh
  little and a repeated paragraph weighs a lot.
Word statistics are vectorised with numpy over all replies of a conversation at once: the pass must take seconds for
the corpus. The language of a conversation is its own filter (language.py).
"""
from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from tasks.config import QualityConfig
from tasks.data.filters.base import Drop, Filter
from tasks.data.minhash import mix
from tasks.data.words import Words, words

MIN_WORDS = 50            # replies shorter than this are not judged by the Gopher statistics
_FENCED_CODE = re.compile(r"^ {0,3}(```|~~~).*?(?:^ {0,3}\1|\Z)", re.DOTALL | re.MULTILINE)  # unclosed: to the end
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?=\s)", re.MULTILINE)

_ODD = np.uint64(0x9E3779B97F4A7C15) * (2 * np.arange(1, 9, dtype=np.uint64) + 1)   # one odd multiplier per position in an n-gram


def prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return _FENCED_CODE.sub("\n", text) if "```" in text or "~~~" in text else text


class Replies(NamedTuple):
    """A conversation's assistant replies: their prose, and all their words with the reply each belongs to."""
    texts: list[str]
    words: Words
    reply: np.ndarray

    @property
    def judged(self) -> np.ndarray:
        """Which replies are long enough for the statistics to mean something."""
        return np.bincount(self.reply, minlength=len(self.texts)) >= MIN_WORDS

    def per_reply(self, values: np.ndarray) -> np.ndarray:
        """Sum of per-word values, by reply."""
        return np.bincount(self.reply, weights=values, minlength=len(self.texts))


def assistant_replies(messages: list[dict]) -> Replies:
    texts = [prose(m["content"]) for m in messages if m["role"] == "assistant"]
    encoded = [t.encode() for t in texts]
    w = words(b"\n".join(encoded))
    ends = np.cumsum([len(e) + 1 for e in encoded])
    return Replies(texts, w, np.searchsorted(ends, w.start, side="right"))


def _ngrams(r: Replies, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(start word, hash) of every word n-gram inside one reply; the hash includes the reply, so equal n-grams of
    different replies differ."""
    h, count = r.words.hash, len(r.words.hash) - n + 1
    if count <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    grams = r.reply[:count].astype(np.uint64)
    for k in range(n):
        grams += h[k:k + count] * _ODD[k]
    grams = mix(grams)
    starts = np.flatnonzero(r.reply[:count] == r.reply[n - 1:])
    return starts, grams[starts]


def symbol_word_ratio(r: Replies) -> np.ndarray:
    """('#' + '...' + '…') per word, not counting markdown heading markers: hashtag and ellipsis spam."""
    symbols = [t.count("...") + t.count("…") + (t.count("#") - sum(map(len, _HEADING.findall(t))) if "#" in t else 0)
               for t in r.texts]
    return np.array(symbols) / np.maximum(np.bincount(r.reply, minlength=len(r.texts)), 1)


def duplicate_line_fraction(r: Replies) -> np.ndarray:
    """Characters in lines that repeat an earlier line of the reply, over characters in all its lines."""
    out = np.zeros(len(r.texts))
    for i, text in enumerate(r.texts):
        lines = list(map(str.strip, text.splitlines()))
        total = sum(map(len, lines))
        out[i] = (total - sum(map(len, set(lines)))) / total if total else 0.0
    return out


def top_2gram_fraction(r: Replies) -> np.ndarray:
    """Characters in the occurrences of the reply's most repeated word 2-gram (occurrences x its characters, the
    2-gram maximising that), over all its word characters; 0 if no 2-gram repeats. Overlapping occurrences (a run
    of one word) count each time, hence the cap at 1."""
    starts, grams = _ngrams(r, 2)
    if not len(grams):
        return np.zeros(len(r.texts))
    order = np.argsort(grams)
    ordered = grams[order]
    bounds = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, [len(grams)]))
    counts, first = np.diff(bounds), starts[order[bounds[:-1]]]
    repeated = counts > 1
    counts, first = counts[repeated], first[repeated]
    best = np.zeros(len(r.texts))
    np.maximum.at(best, r.reply[first], counts * (r.words.length[first] + r.words.length[first + 1]))
    return np.minimum(best / np.maximum(r.per_reply(r.words.length), 1), 1.0)


def duplicate_5gram_fraction(r: Replies) -> np.ndarray:
    """Characters in words covered by a repeat of an earlier word 5-gram of the same reply, over all its word
    characters: a text said twice scores 0.5."""
    starts, grams = _ngrams(r, 5)
    order = np.argsort(grams, kind="stable")              # stable: the first of equal n-grams is the earliest
    repeats = starts[order[1:][grams[order][1:] == grams[order][:-1]]]
    size = len(r.words.hash) + 5
    covered = np.cumsum(np.bincount(repeats, minlength=size) - np.bincount(repeats + 5, minlength=size))[:-5] > 0
    return r.per_reply(r.words.length * covered) / np.maximum(r.per_reply(r.words.length), 1)


def mean_word_length(r: Replies) -> np.ndarray:
    """Mean characters per word over words in scripts written with spaces; NaN with fewer than MIN_WORDS of them."""
    spaced = ~r.words.cjk
    n = np.bincount(r.reply[spaced], minlength=len(r.texts))
    total = np.bincount(r.reply[spaced], weights=r.words.length[spaced], minlength=len(r.texts))
    return np.where(n >= MIN_WORDS, total / np.maximum(n, 1), np.nan)


# ---- checks: (messages, cfg) -> reason | None, cheapest first ----

def empty_turn(messages, cfg):
    return "empty_turn" if any(not m["content"].strip() for m in messages) else None


def trim_leading_replies(messages: list[dict]) -> tuple[list[dict], int]:
    """Drop assistant turns before the first user turn (system turns stay). ShareGPT splits long conversations into
    chunks, and a chunk that starts mid-answer has a reply to a prompt it does not contain: FastChat's rule is to
    train from the first user turn, which keeps the rest of the chunk instead of dropping it whole."""
    first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), len(messages))
    kept = [m for i, m in enumerate(messages) if i >= first_user or m["role"] == "system"]
    return kept, len(messages) - len(kept)


def first_turn_not_user(messages, cfg):
    roles = [m["role"] for m in messages if m["role"] != "system"]
    return "first_turn_not_user" if not roles or roles[0] != "user" else None


def no_assistant_reply(messages, cfg):
    if cfg.require_assistant and not any(m["role"] == "assistant" for m in messages):
        return "no_assistant_reply"
    return None


def length(messages, cfg):
    chars = sum(len(" ".join(m["content"].split())) for m in messages)
    if chars < cfg.min_chars:
        return "too_short"
    return "too_long" if chars > cfg.max_chars else None


def gopher(messages, cfg):
    """The first Gopher statistic out of bounds in any judged assistant reply."""
    r = assistant_replies(messages)
    judged = r.judged
    if not judged.any():
        return None
    for reason, statistic, limit in [("symbol_word_ratio", symbol_word_ratio, cfg.max_symbol_word_ratio),
                                     ("duplicate_lines", duplicate_line_fraction, cfg.max_duplicate_line_fraction),
                                     ("top_2gram", top_2gram_fraction, cfg.max_top_2gram_fraction),
                                     ("duplicate_5grams", duplicate_5gram_fraction, cfg.max_duplicate_5gram_fraction)]:
        if (statistic(r)[judged] > limit).any():
            return reason
    mean = mean_word_length(r)[judged]
    if ((mean < cfg.min_mean_word_length) | (mean > cfg.max_mean_word_length)).any():   # NaN compares False
        return "mean_word_length"
    return None


Check = Callable[[list[dict], QualityConfig], "str | None"]
CHECKS: list[Check] = [empty_turn, first_turn_not_user, no_assistant_reply, length, gopher]


def quality_reason(messages: list[dict], cfg: QualityConfig) -> str | None:
    for check in CHECKS:
        reason = check(messages, cfg)
        if reason:
            return reason
    return None


class Quality(Filter):
    """The first failed check drops the row; trimming leading replies (trim_leading_replies, above) happens on
    reading, before any filter, so that every pass of the clean stage sees the same messages."""
    name = "quality"

    def filter(self, messages: list[dict]) -> Drop | None:
        reason = quality_reason(messages, self.cfg)
        return Drop(reason, {}) if reason else None
