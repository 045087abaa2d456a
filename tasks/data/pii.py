"""PII and secret scrubbing into typed placeholders (`<EMAIL>`, `<IBAN>`, `<SECRET>`, ...), counting by type.

Own code rather than presidio's AnalyzerEngine: regex candidates checked by validators (Luhn, mod-97, ID checksums,
SSA rules, `ipaddress`, `phonenumbers`, a randomness test for secrets) scrub the whole ShareGPT corpus in seconds, at
equal or better recall (benchmarks/pii.py compares both on one corpus). Speed comes from gates: detectors run only on
texts that pass a cheap test most fail (a literal such as "@" or "://", or one digit-run regex shared by every
number-based type), so the costlier regexes and validators see a few percent of the text. Regexes that do scan long
texts open with the character class of their first character and look behind it afterwards: `re` then jumps from
candidate to candidate instead of trying the lookbehind at every position (~4x faster).

Detectors run in priority order, most specific first, and a later one never takes characters an earlier one took: a
private-key block before anything inside it, URL credentials before the email or secret their userinfo looks like, an
IBAN or a Chinese ID before the card or phone a part of it would pass for, a card and an SSN before a phone. Names and
places (presidio NER on an installed spaCy model) are optional and come last.
"""
from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterator

import phonenumbers
from phonenumbers.phonenumbermatcher import _is_national_prefix_present_if_required

from tasks.config import PiiConfig

Span = tuple[int, int]
NER_TYPES = {"PERSON": "person", "LOCATION": "location"}


def placeholder(kind: str) -> str:
    return f"<{kind.upper()}>"


# ---- secrets --------------------------------------------------------------------------------------------------------

PEM_KEY = re.compile(   # a whole block, or, cut off before its END line, the base64 lines that follow BEGIN
    r"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY(?: BLOCK)?-----(?P<body>.*?)-----END \1PRIVATE KEY(?: BLOCK)?-----"
    r"|-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----(?P<cut>(?:(?:\s|\\n)+[A-Za-z0-9+/=]{16,})+)", re.DOTALL)
TOKEN_GATE = re.compile(r"A(?:KIA|SIA|BIA|CCA|3T|Iza)|gh[pousr]_|github_pat_|xox[a-z]-|sk-|k_live_|eyJ")
B64URL = r"(?:[A-Za-z0-9_-]|\\_)"   # ShareGPT's markdown escapes "_" as "\_"
TOKEN = re.compile(
    rf"(?<![A-Za-z0-9_-])(?:"
    rf"(?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{{16}}"                      # AWS access key id
    rf"|gh[pousr]_[A-Za-z0-9]{{36,251}}|github_pat_{B64URL}{{22,244}}"         # GitHub
    rf"|xox[abposre]-\d+-[A-Za-z0-9-]{{8,250}}"                                # Slack
    rf"|sk-(?:proj-|svcacct-|admin-)?(?={B64URL}{{0,250}}\d){B64URL}{{20,250}}"  # OpenAI (a digit: not prose)
    rf"|[sr]k_live_[A-Za-z0-9]{{20,247}}"                                      # Stripe
    rf"|AIza{B64URL}{{35}}"                                                    # Google API key
    rf"|eyJ{B64URL}{{8,}}\.eyJ{B64URL}{{8,}}\.{B64URL}*"                       # JWT: '{{"' . '{{"' . signature
    rf")(?![A-Za-z0-9_-])")
# Keyed secrets are found in a lowercased copy (same offsets): an IGNORECASE regex is ~6x slower here.
ASSIGNMENT = re.compile(
    r"(?:passw(?:or)?d|passphrase|pwd|secret|token|(?:api|access|private|auth)(?:\\?_|-)?key|credential)"
    r"[a-z0-9_\\]*[\"']?[ \t]*(?:=|:|=>|:=)[ \t]*"
    r"(?:\"(?P<dq>[^\"\s]{8,256})\"|'(?P<sq>[^'\s]{8,256})'|(?P<bare>[^\s\"'`,;()\[\]{}<>]{8,256})(?![^\s,;]))")
BEARER = re.compile(r"\bbearer\s+(?P<bare>[a-z0-9._~+/-]{20,}=*)(?![a-z0-9._~+/=-])")
AWS_SECRET = re.compile(r"(?:aws|amazon)[\w ]{0,20}?secret[\w ]{0,20}?[^a-z0-9/+\n]{1,6}(?:is[^a-z0-9/+\n]{1,4})?"
                        r"(?P<bare>[a-z0-9/+]{40})(?![a-z0-9/+=])")
PLACEHOLDER = re.compile(
    r"x{3,}|\*{3,}|\.{3}|<[^>]*>|\{[^}]*\}|\$\{?\w|%s|%\(|(.)\1{4,}"                 # masks and templates
    r"|your|example|sample|dummy|fake|placeholder|changeme|redacted|insert|replace|here|test|123456|abcdef"
    r"|secret|passw(?:or)?d|token|api[_-]?key", re.IGNORECASE)                                  # words
GENERIC_PASSWORD = re.compile(r"(?:my|your|the)?[_-]?(?:pass|pw|pwd|user(?:name)?|admin|root|guest|key)\d{0,3}",
                              re.IGNORECASE)
WORDY = re.compile(r"[^A-Za-z0-9]*(?:[A-Za-z]+\d{0,3}|\d+)(?:[^A-Za-z0-9]+(?:[A-Za-z]+\d{0,3}|\d+))*[^A-Za-z0-9]*")


def is_placeholder(value: str) -> bool:
    """A stand-in, not a credential: masks ("****", "xxxx", "..."), templates ("<token>", "${KEY}") and words."""
    return bool(PLACEHOLDER.search(value) or GENERIC_PASSWORD.fullmatch(value))


def looks_random(value: str) -> bool:
    """A credential rather than a word, identifier, path, number or placeholder: varied, letters mixed with digits or
    symbols inside a word ("self.api_key", "/path/to/creds.json", "release-2023" are words)."""
    value = value.replace("\\_", "_")
    if len(value) < 8 or len(set(value)) < 6 or is_placeholder(value) or WORDY.fullmatch(value):
        return False
    return any(c.isalpha() for c in value) and any(not c.isalpha() for c in value)


def _pem_keys(text: str) -> Iterator[Span]:
    for m in PEM_KEY.finditer(text):
        body = m["body"] if m["body"] is not None else m["cut"]
        if sum(c.isalnum() for c in body) >= 64:   # "...", "<your key>" in docs are not keys
            yield m.span()


def _tokens(text: str) -> Iterator[Span]:
    for m in TOKEN.finditer(text):
        if not is_placeholder(m[0]) and len(set(m[0])) >= 8:
            yield m.span()


def _keyed_secrets(text: str) -> Iterator[Span]:
    """The value of `password = "..."`-style assignments, of `Bearer ...`, and of an AWS secret key next to its name."""
    lower = text.lower()
    if len(lower) != len(text):   # only U+0130 lowercases to two characters
        lower = text.replace("\u0130", "I").lower()
    found = list(ASSIGNMENT.finditer(lower))
    if "bearer" in lower:
        found += BEARER.finditer(lower)
    if "secret" in lower and ("aws" in lower or "amazon" in lower):
        found += AWS_SECRET.finditer(lower)
    for m in found:
        group = next(g for g in ("dq", "sq", "bare") if m.groupdict().get(g) is not None)
        start, end = m.span(group)
        if looks_random(text[start:end]):
            yield start, end


URL_CREDENTIALS = re.compile(r"://(?P<userinfo>[^\s:/?#@\[\]]*:(?P<password>[^\s/?#]+))@(?=[\w\[])")
# a connection string's password is a secret whatever it looks like ("Pass123", "password"); only a mask is not
URL_MASK = re.compile(r"x{3,}|X{3,}|\*{3,}|\.{3,}|<[^<>]*>|\{[^{}]*\}|\$\{[^{}]*\}|\$[A-Za-z_]\w*|%s|%\(\w+\)s")


def _url_credentials(text: str) -> Iterator[Span]:
    """`scheme://user:password@host`: only the userinfo, and not when the password is a mask (`****`, `<password>`,
    `${DB_PASSWORD}`)."""
    for m in URL_CREDENTIALS.finditer(text):
        if not URL_MASK.fullmatch(m["password"]):
            yield m.span("userinfo")


# ---- contact details ------------------------------------------------------------------------------------------------

EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                   r"(?![A-Za-z0-9_-])")
URL_USERINFO_BEFORE = re.compile(r"://[^\s/?#@]*$")


def _emails(text: str) -> Iterator[Span]:
    for m in EMAIL.finditer(text):
        if not URL_USERINFO_BEFORE.search(text, max(0, m.start() - 256), m.start()):   # user:pw@host is no address
            yield m.span()


# Starts after a boundary: not inside a word, path, time ("12:30") or number, but "Tel:" and a literal "\n" (code
# strings, escaped JSON) are boundaries. A number in a row of numbers is a table cell, not a phone.
PHONE_CANDIDATE = re.compile(
    r"(?:(?<![\w/.+:=-])|(?<=[A-Za-z]:)|(?<=\\[nt]))(?<!\d )"
    r"(?:(?:\+|00)\d{1,3}[ .-]?|\(\+?\d{1,4}\)[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,12}(?:[ .-]\d{2,8}){0,4}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w/:]|[-.]\d| \d)", re.ASCII)
NON_DIGIT, SEPARATOR = re.compile(r"\D"), re.compile(r"[ .-]")
PHONE_PREFIX = re.compile(r"^(?:(?:\+|00)\d{1,3}[ .-]?|\(\+?\d{1,4}\)[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?")
EXTENSION = re.compile(r"\s?(?:x|ext\.?)\s?\d{1,5}$")
CN_MOBILE = re.compile(r"(?:(?:\+|00)86[ -]?|\(\+?86\)[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}")
YEAR = re.compile(r"(?:19|20)\d\d")
PHONE_CONTEXT = re.compile(
    r"(?:phone|tel|call|mobile|cell|fax|office|desk|whatsapp|contact|number|电话|手机|联系)\W{0,3}\S*\W{0,3}$",
    re.IGNORECASE)
NOT_PHONE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}"   # dates
                       r"|\d+\.\d+|\d{1,3}(?:\.\d{1,3}){3}|\d{3}([- ])\d\d\1\d{4}")          # decimals, IPs, SSNs


def _phone_ok(m: re.Match, text: str, regions: tuple[str, ...]) -> bool:
    value = EXTENSION.sub("", m.group())
    if CN_MOBILE.fullmatch(value):
        return True
    digits = NON_DIGIT.sub("", value)
    if not 7 <= len(digits) <= 15 or NOT_PHONE.fullmatch(value):
        return False
    body = PHONE_PREFIX.sub("", value)
    separators = set(SEPARATOR.findall(body))
    if len(separators) > 1:   # "2023-01-09 01", "23.264 107.750": tables and timestamps, not phones
        return False
    if body == value and not separators and not PHONE_CONTEXT.search(text, max(0, m.start() - 30), m.start()):
        return False          # a bare digit run is a phone only next to a word that says so
    groups = body.split(separators.pop()) if separators else [body]
    if all(YEAR.fullmatch(g) for g in groups) or (body == value and "-" in body and len(groups) == 2
                                                  and len(groups[0]) == len(groups[1])):
        return False          # "2012-2013", "6435-6440": year and page ranges
    return any(_valid_phone(value, region) for region in (regions if value[0] != "+" else regions[:1]))


def _valid_phone(value: str, region: str) -> bool:
    """phonenumbers' VALID leniency, as its PhoneNumberMatcher (and presidio) apply it: a valid number, written with
    the national prefix where the region requires one (a German number without its 0 is a street number and a ZIP).
    The region only matters without "+", and each parse costs ~15 us."""
    try:
        number = phonenumbers.parse(value, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and _is_national_prefix_present_if_required(number)


def _phones(text: str, regions: tuple[str, ...]) -> Iterator[Span]:
    for m in PHONE_CANDIDATE.finditer(text):
        if _phone_ok(m, text, regions):
            yield m.span()


IPV4 = re.compile(r"\d(?<![\w.].)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w|\.\d)", re.ASCII)
IPV6_GATE = re.compile(r":[0-9A-Fa-f]{1,4}:|::")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:])",
                  re.ASCII)
VERSION_BEFORE = re.compile(r"\b(?:v|version|ver\.?)\s*$", re.IGNORECASE)


def _ipv4s(text: str) -> Iterator[Span]:
    for m in IPV4.finditer(text):
        if VERSION_BEFORE.search(text, max(0, m.start() - 10), m.start()):
            continue
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        yield m.span()


def _ipv6s(text: str) -> Iterator[Span]:
    for m in IPV6.finditer(text):
        value = m.group()
        if len(value) < 6 or not any(c.isdigit() for c in value):   # "a::b", "std::" are C++
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield m.span()


# ---- numbers with check digits --------------------------------------------------------------------------------------

# ISO 13616 registry: IBAN length per country
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BI": 27, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24,
    "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30}
IBAN = re.compile(r"[A-Z](?<![A-Za-z0-9].)[A-Z]\d\d(?:[ -]?[A-Z0-9]){11,30}", re.ASCII)   # upper case, as written
CN_ID = re.compile(r"[1-8](?<![0-9A-Za-z].)\d{16}[0-9Xx](?![0-9A-Za-z])", re.ASCII)
CARD = re.compile(r"\d(?<![\d+.-].)(?:[ -]?\d){11,18}(?![\d-]|\.\d)", re.ASCII)
CARD_GROUPS = re.compile(r"\d+|\d{4}(?:[ -]\d{3,6})+")   # unbroken, or 4 then groups of 3-6: not "2 5 19 17 16"
CARD_PREFIX = re.compile(r"4|5[0-8]|6|3|2(?:22[1-9]|2[3-9]|[3-6]|7[01]|720)|1800|2131")   # issuer ranges (IIN)
SSN = re.compile(r"\d(?<![\d-].)(?<!\d .)\d\d([- ])\d{2}\1\d{4}(?![\d-])(?! \d)", re.ASCII)
SSN_BARE = re.compile(r"\d(?<![\d-].)\d{8}(?![\d-])", re.ASCII)
SSN_CONTEXT = re.compile(r"\b(?:ssn|ss#|social\s+security)\b", re.IGNORECASE)
SSN_INVALID = {"123456789", "078051120", "219099999", "987654320"}   # published samples (presidio's list and more)

_CN_ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    """ISO 13616: the country's length and ISO 7064 mod 97-10 over BBAN + country + check digits."""
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban[2:4].isdigit():
        return False
    return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1


def cn_id_ok(value: str) -> bool:
    """GB 11643-1999: a valid birth date and the ISO 7064 MOD 11-2 check character."""
    try:
        dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    check = "10X98765432"[sum(int(c) * w for c, w in zip(value[:17], _CN_ID_WEIGHTS)) % 11]
    return value[17].upper() == check


def ssn_ok(digits: str) -> bool:
    """SSA rules: no area 000, 666 or 9xx (ITINs), no group 00 or serial 0000, not one repeated digit, no sample."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
            and len(set(digits)) > 1 and digits not in SSN_INVALID)


def _ibans(text: str) -> Iterator[Span]:
    for m in IBAN.finditer(text):   # the match may run into the next word: keep the country's length
        keep = [i for i, c in enumerate(m[0]) if c.isalnum()][:IBAN_LENGTHS.get(m[0][:2], 0)]
        end = m.start() + keep[-1] + 1 if keep else 0
        if keep and not text[end:end + 1].isalnum() and iban_ok("".join(m[0][i] for i in keep)):
            yield m.start(), end


def _cn_ids(text: str) -> Iterator[Span]:
    for m in CN_ID.finditer(text):
        if cn_id_ok(m.group()):
            yield m.span()


def _cards(text: str) -> Iterator[Span]:
    for m in CARD.finditer(text):
        digits = NON_DIGIT.sub("", m.group())
        if (CARD_GROUPS.fullmatch(m.group()) and CARD_PREFIX.match(digits)
                and (len(digits) >= 13 or digits[0] in "56") and luhn_ok(digits)):   # 12 digits: Maestro only
            yield m.span()


def _ssns(text: str) -> Iterator[Span]:
    for m in SSN.finditer(text):
        if ssn_ok(m[0].replace(m[1], "")):
            yield m.span()
    for m in SSN_BARE.finditer(text):   # nine bare digits are an SSN only next to a word that says so
        if ssn_ok(m[0]) and SSN_CONTEXT.search(text, max(0, m.start() - 40), m.start()):
            yield m.span()


# ---- the scrubber ---------------------------------------------------------------------------------------------------

# Every number-based type has a run of 7+ digits (single separators allowed; an IBAN's account part too) or is a
# dotted quad: one scan decides whether any of them runs (~6% of ShareGPT's characters are in texts that pass).
NUMERIC_GATE = re.compile(r"\d(?:[ ./()-]?\d){6,}|\d\.\d{1,3}\.\d{1,3}\.\d", re.ASCII)

# In priority order: (gate, detectors run only when the text contains the gate's regex (None: always)), where a
# detector is (type, finder yielding the spans it validated).
DETECTORS = [
    (re.compile("PRIVATE KEY"), [("secret", _pem_keys)]),
    (re.compile("://"), [("url_credentials", _url_credentials)]),
    (TOKEN_GATE, [("secret", _tokens)]),
    (None, [("secret", _keyed_secrets)]),
    (re.compile("@"), [("email", _emails)]),
    (IPV6_GATE, [("ip_address", _ipv6s)]),
    (NUMERIC_GATE, [("iban", _ibans), ("cn_resident_id", _cn_ids), ("credit_card", _cards), ("us_ssn", _ssns),
                    ("ip_address", _ipv4s), ("phone", _phones)]),
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
        self.steps = [(gate, [(kind, functools.partial(find, regions=regions) if kind == "phone" else find)
                              for kind, find in detectors if kind in cfg.types])
                      for gate, detectors in DETECTORS]
        self.ner_model = cfg.ner_model
        if self.ner_model:
            _ner_analyzer(self.ner_model)   # fail at construction, not on the first text

    def detect(self, text: str) -> list[tuple[str, int, int]]:
        """(type, start, end) of every span `scrub` replaces: sorted, non-overlapping."""
        taken: list[tuple[int, int, str]] = []
        for gate, detectors in self.steps:
            if detectors and (gate is None or gate.search(text)):
                for kind, find in detectors:
                    for start, end in find(text):
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
