"""The language filter: a conversation is kept when py3langid finds one of `languages` in it, and is sure enough.

Language ID (py3langid, normalised probabilities) reads LANGUAGE_PREFIX characters of running text, replies first
(language_of). It is the costliest per-row filter, hence its own switch: listed in clean.filters or not run at all.
"""
from __future__ import annotations

import re
from functools import cache

from tasks.data.filters.base import Drop, Filter
from tasks.data.filters.quality import prose

LANGUAGE_PREFIX = 300     # characters of prose given to language ID (its cost is linear in them)
MIN_LANGUAGE_LETTERS = 50   # less prose than this ("Acknowledged.") is not judged: too short to tell reliably
_NOT_LETTER = re.compile(r"[\W\d_]+")


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


class Language(Filter):
    name = "language"

    def filter(self, messages: list[dict]) -> Drop | None:
        found = language_of(messages)
        if found is None:
            return None
        lang, score = found
        detail = {"language": lang, "score": round(float(score), 4)}
        if score < self.cfg.min_language_score:
            return Drop("language_score", detail)   # not sure which language: lists of names, tables, garbled text
        return None if lang in self.cfg.languages else Drop("language", detail)
