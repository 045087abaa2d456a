"""PII and secret scrubbing into typed placeholders (`<EMAIL>`, `<IBAN>`, `<SECRET>`, ...), counting by type.

Own code rather than presidio's AnalyzerEngine: regex candidates checked by validators (Luhn, mod-97, ID checksums,
SSA rules, `ipaddress`, `phonenumbers`, a randomness test for secrets) scrub the whole ShareGPT corpus in seconds, at
equal or better recall (benchmarks/pii.py compares both on one corpus, and on a hard set of PII written the way people
write it). Speed comes from gates: detectors run only on texts that pass a cheap test most fail (a literal such as "@"
or "://", or one digit-run regex shared by every number-based type), so the costlier regexes and validators see a few
percent of the text. Regexes that do scan long texts open with the character class of their first character and look
behind it afterwards: `re` then jumps from candidate to candidate instead of trying the lookbehind at every position.

The detectors read a width-folded view of the text (pii_normalise.py: full-width digits, letters and "＠" as ASCII, one
character for one, so spans are the original's and the rest of the text stays byte-identical); ASCII texts, most of
them, are their own view. Spelled-out addresses ("name at gmail dot com"), digit runs split by spaces or dots and
lower-case IBANs are matched as written and validated in canonical form (pii_contact.py, pii_numbers.py); secrets,
including passwords disclosed in prose, are in pii_secrets.py.

Detectors run in priority order, most specific first, and a later one never takes characters an earlier one took: a
private-key block before anything inside it, URL credentials before the email or secret their userinfo looks like, an
IBAN or a Chinese ID before the card or phone a part of it would pass for, a card and an SSN before a phone. Names and
places (presidio NER on an installed spaCy model) are optional and come last.
"""
from __future__ import annotations

import functools
import re
from bisect import bisect_left
from collections import Counter

from tasks.config import PiiConfig
from tasks.data.pii_contact import IPV6_GATE, emails, ipv4s, ipv6s, phones, spelled_emails, spelled_gate
from tasks.data.pii_normalise import fold_width
from tasks.data.pii_numbers import cards, cn_id_ok, cn_ids, iban_ok, ibans, luhn_ok, ssn_ok, ssns
from tasks.data.pii_secrets import TOKEN_GATE, keyed_secrets, looks_random, pem_keys, tokens, url_credentials

__all__ = ["Scrubber", "cn_id_ok", "iban_ok", "looks_random", "luhn_ok", "placeholder", "ssn_ok"]
NER_TYPES = {"PERSON": "person", "LOCATION": "location"}


def placeholder(kind: str) -> str:
    return f"<{kind.upper()}>"


# Every number-based type has a run of 7+ digits (single separators allowed; an IBAN's account part too) or is a
# dotted quad: one scan decides whether any of them runs (~6% of ShareGPT's characters are in texts that pass).
NUMERIC_GATE = re.compile(r"\d(?:[ ./()-]?\d){6,}|\d\.\d{1,3}\.\d{1,3}\.\d", re.ASCII)

# In priority order: (gate, detectors run only when the gate is true of the text (None: always)), where a detector
# is (type, finder yielding the spans it validated).
DETECTORS = [
    (re.compile("PRIVATE KEY").search, [("secret", pem_keys)]),
    (re.compile("://").search, [("url_credentials", url_credentials)]),
    (TOKEN_GATE.search, [("secret", tokens)]),
    (None, [("secret", keyed_secrets)]),
    (spelled_gate, [("email", spelled_emails)]),
    (re.compile("@").search, [("email", emails)]),
    (IPV6_GATE.search, [("ip_address", ipv6s)]),
    (NUMERIC_GATE.search, [("iban", ibans), ("cn_resident_id", cn_ids), ("credit_card", cards), ("us_ssn", ssns),
                    ("ip_address", ipv4s), ("phone", phones)]),
]


@functools.cache
def _ner_analyzer(model: str):
    """presidio over a spaCy pipeline loaded here, once per process: presidio's own load() downloads missing models."""
    import spacy

    try:
        nlp = spacy.load(model)   # a package name or a directory; never downloads
    except (OSError, ImportError) as e:
        raise ValueError(f"pii.ner_model {model!r} is not an installed spaCy model or model directory ({e}). Install "
                         f"one into this environment (`pip install <model wheel>`, or `python -m spacy download "
                         f"en_core_web_lg` where the network allows), pass its directory, or set pii.ner_model: null"
                         ) from e
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer

    engine = SpacyNlpEngine(models=[{"lang_code": "en", "model_name": model}])
    engine.nlp = {"en": nlp}   # loaded, so AnalyzerEngine does not call engine.load()
    registry = RecognizerRegistry(recognizers=[SpacyRecognizer(supported_entities=list(NER_TYPES))],
                                  supported_languages=["en"])
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


def _claim(taken: list[tuple[int, int, str]], kind: str, start: int, end: int) -> None:
    """Adds the span unless it overlaps one already taken (by a more specific detector); `taken` stays sorted."""
    i = bisect_left(taken, (start,))
    if (i and taken[i - 1][1] > start) or (i < len(taken) and taken[i][0] < end):
        return
    taken.insert(i, (start, end, kind))


class Scrubber:
    """`detect` finds the PII spans of a text, `scrub` replaces them with placeholders and counts them by type.

    Holds only regexes, module-level functions and the NER model's name, so it pickles to worker processes.
    """

    def __init__(self, cfg: PiiConfig):
        regions = tuple(cfg.phone_regions)
        self.steps = [(gate, [(kind, functools.partial(find, regions=regions) if find is phones else find)
                              for kind, find in detectors if kind in cfg.types])
                      for gate, detectors in DETECTORS]
        self.ner_model = cfg.ner_model
        if self.ner_model:
            _ner_analyzer(self.ner_model)   # fail at construction, not on the first text

    def detect(self, text: str) -> list[tuple[str, int, int]]:
        """(type, start, end) of every span `scrub` replaces: sorted, non-overlapping."""
        taken: list[tuple[int, int, str]] = []
        view = fold_width(text)   # same length: its spans are the text's
        for gate, detectors in self.steps:
            if detectors and (gate is None or gate(view)):
                for kind, find in detectors:
                    for start, end in find(view):
                        _claim(taken, kind, start, end)
        if self.ner_model:
            for r in _ner_analyzer(self.ner_model).analyze(text, language="en", entities=list(NER_TYPES)):
                _claim(taken, NER_TYPES[r.entity_type], r.start, r.end)
        return [(kind, start, end) for start, end, kind in taken]

    def scrub(self, text: str) -> tuple[str, Counter]:
        spans = self.detect(text)
        parts, last = [], 0
        for kind, start, end in spans:
            parts += [text[last:start], placeholder(kind)]
            last = end
        parts.append(text[last:])
        return "".join(parts), Counter(kind for kind, _, _ in spans)
