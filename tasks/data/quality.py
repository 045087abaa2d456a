"""Quality filters on one conversation, datatrove-style: each returns a drop reason or None.

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
the corpus. Language ID (py3langid, normalised probabilities) reads LANGUAGE_PREFIX characters of running text,
replies first (language_of), and runs only when `languages` is set: it is the costliest filter.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import numpy as np

from tasks.config import QualityConfig
from tasks.data.minhash import mix

MIN_WORDS = 50            # replies shorter than this are not judged by the Gopher statistics
LANGUAGE_PREFIX = 300     # characters of prose given to language ID (its cost is linear in them)
MIN_LANGUAGE_LETTERS = 50   # less prose than this ("Acknowledged.") is not judged: too short to tell reliably
_FENCED_CODE = re.compile(r"^ {0,3}(```|~~~).*?(?:^ {0,3}\1|\Z)", re.DOTALL | re.MULTILINE)  # unclosed: to the end
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?=\s)", re.MULTILINE)
_NOT_LETTER = re.compile(r"[\W\d_]+")

_WORD_BYTE = np.zeros(256, bool)          # letters, digits and every byte of a non-ASCII character
_WORD_BYTE[[*range(48, 58), *range(65, 91), *range(97, 123), *range(128, 256)]] = True
_HEAD_MASK = np.array([(1 << 8 * k) - 1 for k in range(8)] + [2**64 - 1], np.uint64)   # keep a word's first k bytes
_SEPARATORS = [  # non-ASCII punctuation and symbols, by UTF-8 encoding: (lead byte, second byte & mask == value, bytes)
    (0xC2, 0xC0, 0x80, 2),   # U+0080-U+00BF: Latin-1 punctuation and signs
    (0xE2, 0xFE, 0x80, 3),   # U+2000-U+207F: dashes, curly quotes, the ellipsis
    (0xE3, 0xFF, 0x80, 3),   # U+3000-U+303F: CJK punctuation
    (0xEF, 0xFE, 0xBC, 3),   # U+FF00-U+FF7F: fullwidth forms
    (0xF0, 0xFF, 0x9F, 4),   # U+1F000-U+1FFFF: emoji and pictographs
]
_ODD = np.uint64(0x9E3779B97F4A7C15) * (2 * np.arange(1, 9, dtype=np.uint64) + 1)   # one odd multiplier per position in an n-gram


def prose(text: str) -> str:
    """The text without its fenced code blocks."""
    return _FENCED_CODE.sub("\n", text) if "```" in text or "~~~" in text else text


class Words(NamedTuple):
    """Every word of some UTF-8 text, in order."""
    start: np.ndarray     # byte offset
    hash: np.ndarray      # of the ASCII-case-folded word
    length: np.ndarray    # in characters
    cjk: np.ndarray       # a single Han or kana character


def words(data: bytes) -> Words:
    """A word is a run of letters and digits, or one Han/kana character (Chinese and Japanese are written without
    spaces); common non-ASCII punctuation and emoji separate words like ASCII punctuation does (_SEPARATORS).
    A word's hash reads its length and its first and last 8 bytes (whole words up to 16 bytes, nearly all of them):
    per-word numpy work, where hashing every byte cost 3x more."""
    b = np.frombuffer(data.lower() + bytes(8), np.uint8)    # bytes.lower folds ASCII only; 8 bytes of padding
    word = _WORD_BYTE[b]
    word[-8:] = False
    if data.isascii():
        edges = np.flatnonzero(word[1:] != word[:-1]) + 1     # alternately word starts and ends...
        if word[0]:                                           # ...once a word at offset 0 has its start
            edges = np.concatenate(([0], edges))
        starts, ends = edges[0::2], edges[1::2]
        lengths, cjk = ends - starts, np.zeros(len(starts), bool)
    else:
        for lead, mask, value, size in _SEPARATORS:
            at = np.flatnonzero((b[:-1] == lead) & ((b[1:] & mask) == value))
            word[(at[:, None] + np.arange(size)).ravel()] = False
        is_cjk = word & (b >= 0xE3) & (b <= 0xE9)            # lead bytes of U+3040-U+9FFF: kana, ideographs
        start = word & ~np.r_[False, word[:-1]] | is_cjk
        after = np.flatnonzero(is_cjk) + 3                    # the byte after a CJK character starts a new word
        start[after] |= word[after]
        starts = np.flatnonzero(start)
        ends = np.flatnonzero(word & ~np.r_[word[1:], False] | np.r_[start[1:], False] & word) + 1
        chars = np.r_[0, np.cumsum((b & 0xC0) != 0x80)]      # UTF-8 lead bytes count characters
        lengths, cjk = chars[ends] - chars[starts], is_cjk[starts]
    window = np.lib.stride_tricks.as_strided(b, (len(b) - 7, 8), (1, 1), writeable=False)
    size = ends - starts
    head = window[starts].view(np.uint64).ravel() & _HEAD_MASK[np.minimum(size, 8)]
    tail = np.where(size > 8, window[np.maximum(ends - 8, 0)].view(np.uint64).ravel(), 0)
    hashes = mix(mix(head ^ size.astype(np.uint64)) + tail)
    return Words(starts, hashes, lengths, cjk)


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


# ---- filters: (messages, cfg) -> reason | None, cheapest first ----

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


@cache
def _identifier():
    """py3langid's model, loaded once per process (0.5 s) on first use, so nothing large is pickled to workers."""
    from py3langid.langid import MODEL_FILE, LanguageIdentifier
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def language_of(messages: list[dict]) -> tuple[str, float] | None:
    """(ISO 639 code, probability) of the conversation's first LANGUAGE_PREFIX characters of running text: prose
    lines (code removed) of at least 8 words, from the assistant replies first, then the user turns; shorter lines
    (list items, table rows, names) only when that is not enough. Replies first: they are what the model learns to
    write, and prompts often open with pasted code, logs or data that read as no language or the wrong one.
    None when there is too little prose to judge ("Acknowledged.")."""
    turns = [m for m in messages if m["role"] == "assistant"] + [m for m in messages if m["role"] != "assistant"]
    sentences, others, size = [], [], 0
    for m in turns:
        for line in prose(m["content"][:4 * LANGUAGE_PREFIX]).splitlines():
            if line.count(" ") >= 7:
                sentences.append(line)
                size += len(line)
            else:
                others.append(line)
        if size >= LANGUAGE_PREFIX:
            break
    text = " ".join(" ".join(sentences + others)[:2 * LANGUAGE_PREFIX].split())[:LANGUAGE_PREFIX]
    if len(_NOT_LETTER.sub("", text)) < MIN_LANGUAGE_LETTERS:
        return None
    return _identifier().classify(text)


def language(messages, cfg):
    if not cfg.languages:
        return None
    found = language_of(messages)
    if found is None:
        return None
    lang, score = found
    if score < cfg.min_language_score:
        return "language_score"        # not sure which language: lists of names, tables, numbers, garbled text
    return None if lang in cfg.languages else "language"


Filter = Callable[[list[dict], QualityConfig], "str | None"]
FILTERS: list[Filter] = [empty_turn, first_turn_not_user, no_assistant_reply, length, gopher, language]


def quality_reason(messages: list[dict], cfg: QualityConfig) -> str | None:
    for check in FILTERS:
        reason = check(messages, cfg)
        if reason:
            return reason
    return None
