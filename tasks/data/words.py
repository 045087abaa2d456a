"""Words of UTF-8 text as numpy arrays: what the quality statistics count and decontamination's n-grams are made of.

Vectorised, because both run on every row of the corpus: a word is found, measured and hashed by array operations
over the whole text at once, never by a Python loop over its words.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from tasks.data.minhash import mix

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
