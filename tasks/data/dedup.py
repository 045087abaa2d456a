"""What counts as 'the same text': exact dedup's fingerprint, and the normalisation near-dedup shingles
(tasks/data/minhash.py hashes the bytes that `Normaliser.chunk` returns, so every caller sees one definition)."""
from __future__ import annotations

import functools
import hashlib
import itertools
import re
import unicodedata
from collections.abc import Sequence

import numpy as np

from tasks.config import NormaliseConfig

_WS = re.compile(r"\s+")
# Han, kana, hangul, CJK punctuation and full-width forms: written without spaces, so each character is a token
_CJK_RANGES = ((0x3000, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF),
               (0xFF00, 0xFFEF), (0x20000, 0x3FFFF))
# The Combining Diacritical Marks block, what NFKD splits off accented Latin, Greek and Cyrillic letters. Not every
# mark: Devanagari's viramas and vowel signs or kana's voicing marks are marks too, and dropping them merges words.
_ACCENTS = re.compile("[\u0300-\u036f]+")
_KEEP, _SPACE, _CJK = 0, 1, 2


def normalise(text: str) -> str:
    """What counts as 'the same text' for exact dedup: NFKC, case-folded, whitespace collapsed."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def fingerprint(text: str) -> str:
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).hexdigest()


def _separator(char: str, punctuation: bool) -> bool:
    """Whitespace always; punctuation and symbols (Unicode categories P and S) when `punctuation` is on."""
    return char.isspace() or char < " " or (punctuation and unicodedata.category(char)[0] in "PS")


@functools.cache
def _kinds(punctuation: bool) -> np.ndarray:
    """Per non-ASCII code point: kept, a separator, or a CJK character (a token of its own). Built once per process
    (~20 ms); Unicode assigns no separator above U+1FFFF."""
    kinds = np.full(0x110000, _KEEP, np.uint8)
    for lo, hi in _CJK_RANGES:
        kinds[lo:hi + 1] = _CJK
    kinds[[c for c in range(0x80, 0x20000) if _separator(chr(c), punctuation)]] = _SPACE
    return kinds


def _ascii_table(cfg: NormaliseConfig) -> bytes:
    """bytes.translate table for the ASCII bytes of a chunk: the same rules as for other characters, applied in C."""
    table = bytearray(range(256))
    for c in range(128):
        char = chr(c)
        if cfg.lowercase:
            table[c] = ord(char.lower())
        if _separator(char, cfg.punctuation):
            table[c] = ord(" ")
    return bytes(table)


def _code_points(data: np.ndarray, lead: np.ndarray, width: np.ndarray) -> np.ndarray:
    """UTF-8 decoding in numpy: the code point of each multi-byte character, given its lead byte and byte count."""
    cp = data[lead].astype(np.uint32) & (0x7F >> width).astype(np.uint32)
    for k in range(1, 4):
        tail = data[np.minimum(lead + k, len(data) - 1)] & np.uint32(0x3F)
        cp = np.where(k < width, (cp << 6) | tail, cp)
    return cp


def _zero_numbers(data: np.ndarray) -> np.ndarray:
    """Every digit of a number, a token of digits only (2023; 3.14 once its point is a space), becomes 0. Digits in
    words (python3, word7) are part of a name and stay: folded, a list of such names would collapse to a few tokens."""
    digits = np.flatnonzero((data - np.uint8(ord("0"))) < 10)       # uint8 wrap-around: one comparison
    if not digits.size:
        return data
    breaks = np.flatnonzero(np.diff(digits) != 1) + 1                 # runs of consecutive digits
    first, last = digits[np.r_[0, breaks]], digits[np.r_[breaks - 1, len(digits) - 1]]
    number = (data[first - 1] == ord(" ")) & (data[last + 1] == ord(" "))   # data starts and ends with a space
    data = data if data.flags.writeable else data.copy()
    data[digits[np.repeat(number, last - first + 1)]] = ord("0")
    return data


def _ramp(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each c in counts, concatenated."""
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


class Normaliser:
    """Near-dedup's view of text (NormaliseConfig), for a chunk of documents at once. Per document, only non-ASCII
    ones: case folding and Unicode normalisation (C-level str methods). Per chunk: one bytes.translate for the ASCII
    bytes (case, punctuation), a few numpy operations on the multi-byte characters (separators become spaces, each
    CJK character gets a space either side), and a few on the digits. No per-character Python."""

    def __init__(self, cfg: NormaliseConfig):
        self.cfg = cfg
        self.ascii, self.kinds = _ascii_table(cfg), _kinds(cfg.punctuation)

    def fold(self, text: str) -> bytes:
        """Case and Unicode forms of one document, as UTF-8. ASCII is left to the byte table (the same result, in C
        per chunk)."""
        if text.isascii():
            return text.encode()
        if self.cfg.lowercase:                   # first: folding can emit accents, which the forms below drop
            text = text.casefold()
        if not self.cfg.diacritics:
            return (unicodedata.normalize("NFKC", text) if self.cfg.width else text).encode()
        text = unicodedata.normalize("NFKD" if self.cfg.width else "NFD", text)
        raw = text.encode()
        if b"\xcc" in raw or b"\xcd" in raw:    # U+0300-037F in UTF-8: a byte search spares most texts the regex
            text = _ACCENTS.sub("", text)
        return unicodedata.normalize("NFC", text).encode()     # recompose what is left (hangul syllables)

    def chunk(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normalised UTF-8 of the documents, each preceded by a space and ending in one; offset of each document's
        leading space, plus the last one; offset of each CJK character). Tokens are the runs between spaces."""
        encoded = [self.fold(t) for t in texts]
        data = np.frombuffer((b" " + b" ".join(encoded) + b" ").translate(self.ascii), np.uint8)
        bounds = np.r_[0, np.cumsum([len(e) + 1 for e in encoded])]
        data, bounds, cjk_at = self._multi_byte(data, bounds)
        return (_zero_numbers(data) if self.cfg.digits else data), bounds, cjk_at

    def _multi_byte(self, data: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Separators among the multi-byte characters become spaces (all their bytes), CJK characters get a space
        either side; the document offsets move with them."""
        lead = np.flatnonzero(data >= 0xC0)
        if not lead.size:
            return data, bounds, lead
        width = 2 + (data[lead] >= 0xE0) + (data[lead] >= 0xF0)
        kind = self.kinds[_code_points(data, lead, width)]
        sep, cjk = kind == _SPACE, kind == _CJK
        if sep.any():
            data = data.copy()
            data[np.repeat(lead[sep], width[sep]) + _ramp(width[sep])] = ord(" ")
        if not cjk.any():
            return data, bounds, lead[cjk]
        at = np.sort(np.r_[lead[cjk], lead[cjk] + width[cjk]])      # the j-th CJK character moves by 2j + 1
        data, bounds = np.insert(data, at, ord(" ")), bounds + np.searchsorted(at, bounds)
        return data, bounds, lead[cjk] + 2 * np.arange(cjk.sum()) + 1

    def is_cjk(self, token: str) -> bool:
        """Whether a token of `texts` is a CJK character (shingles starting there use the CJK n-gram size)."""
        return len(token) == 1 and self.kinds[ord(token)] == _CJK

    def texts(self, texts: Sequence[str]) -> list[str]:
        """Each document as near-dedup sees it: str.split() gives the tokens that shingles are n-grams of."""
        data, bounds, _ = self.chunk(texts)
        raw = data.tobytes()
        return [raw[a:b].decode() for a, b in itertools.pairwise(bounds)]
