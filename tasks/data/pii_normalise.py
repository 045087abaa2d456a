"""PII as people write it, read the way the detectors expect, without moving a character.

Full-width forms (common in Chinese text: "１３８１２３４５６７８", "ｎａｍｅ＠ｑｑ．ｃｏｍ") fold to ASCII by NFKC's own mapping,
one character for one, so a span found in the folded view is the same span of the original and the replacement keeps
every other character, full-width ones included. Separators inside digit runs and spelled-out "at"/"dot" change the
length, so they are not rewritten in the view: a detector matches the written form and validates its canonical form
(`digits_of`, `unspell`), and its span is again the original's.
"""
from __future__ import annotations

import re
import unicodedata

# Chinese punctuation that the detectors read as a boundary stays ("电话：138..." folded to "电话:138" would look like the
# inside of "12:30"); "！" and "？" fold, as inside a full-width password they are part of it.
BOUNDARY_PUNCTUATION = "，：；"
FOLD = {cp: unicodedata.normalize("NFKC", chr(cp)) for cp in [0x3000, *range(0xFF01, 0xFF5F)]
        if chr(cp) not in BOUNDARY_PUNCTUATION}
assert all(len(v) == 1 for v in FOLD.values())   # one for one: offsets need no map
WIDE = re.compile("[" + "".join(map(chr, FOLD)) + "]")

SPELLED_AT = r"(?: ?[\[({<] ?(?i:at) ?[\])}>] ?| {1,3}(?i:at) {1,3}|@)"
SPELLED_DOT = r"(?: ?[\[({<] ?(?i:dot) ?[\])}>] ?| {1,3}(?i:dot) {1,3}|\.)"
_AT, _DOT = re.compile(SPELLED_AT), re.compile(SPELLED_DOT)
NON_DIGIT = re.compile(r"\D")


def fold_width(text: str) -> str:
    """`text` with full-width letters, digits, symbols and the ideographic space as ASCII; `text` itself (no copy) when
    it has none, which `isascii` (a flag CPython keeps) settles at once for most texts."""
    return text if text.isascii() or not WIDE.search(text) else text.translate(FOLD)


def unspell(value: str) -> str:
    """"name (at) mail [dot] com" -> "name@mail.com"."""
    return _DOT.sub(".", _AT.sub("@", value))


def digits_of(value: str) -> str:
    return NON_DIGIT.sub("", value)
