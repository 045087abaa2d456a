"""Numbers with check digits (IBAN, Chinese resident ID, payment card, US SSN): a regex finds the candidate as written,
separators and lower case included, and the validator decides on its canonical form (digits only, upper case), so an
order number, a version or a date of the same shape fails the checksum or the grouping rule and stays."""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

from tasks.data.pii_normalise import digits_of

Span = tuple[int, int]

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
IBAN = re.compile(r"[A-Za-z](?<![A-Za-z0-9].)[A-Za-z]\d\d(?:[ -]?[A-Za-z0-9]){11,30}", re.ASCII)
# 18 characters, a separator allowed between any two ("110105 19491231 002X"); not inside a longer run
CN_ID = re.compile(r"[1-8](?<![0-9A-Za-z].)(?<!\d[ -].)(?:[ -]?\d){16}[ -]?[0-9Xx](?![0-9A-Za-z]|[ -]\d)", re.ASCII)
CN_ID_GROUPS = re.compile(r"(?:[0-9]{3,}[ -])*[0-9Xx]+")     # groups of 3 or more, the last may be shorter
CARD = re.compile(r"\d(?<![\d+.-].)(?:[ .-]?\d){11,18}(?![\d-]|\.\d)", re.ASCII)
# unbroken, or 4 then groups of 3-6 (not "2 5 19 17 16"); dots only alone, as in "4111.1111.1111.1111"
CARD_GROUPS = re.compile(r"\d+|\d{4}(?:[ -]\d{3,6})+|\d{4}(?:\.\d{3,6})+")
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


def _born(value: str) -> bool:
    """Digits 7-14 are a date, as a resident ID's birth date."""
    try:
        dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    return True


def cn_id_ok(value: str) -> bool:
    """GB 11643-1999: a valid birth date and the ISO 7064 MOD 11-2 check character."""
    if not _born(value):
        return False
    check = "10X98765432"[sum(int(c) * w for c, w in zip(value[:17], _CN_ID_WEIGHTS)) % 11]
    return value[17].upper() == check


def ssn_ok(digits: str) -> bool:
    """SSA rules: no area 000, 666 or 9xx (ITINs), no group 00 or serial 0000, not one repeated digit, no sample."""
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return (area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
            and len(set(digits)) > 1 and digits not in SSN_INVALID)


def ibans(text: str) -> Iterator[Span]:
    """Upper or lower case ("de89 3704 ..." in chat), not mixed: "Ab12..." is an identifier."""
    for m in IBAN.finditer(text):   # the match may run into the next word: keep the country's length
        keep = [i for i, c in enumerate(m[0]) if c.isalnum()][:IBAN_LENGTHS.get(m[0][:2].upper(), 0)]
        end = m.start() + keep[-1] + 1 if keep else 0
        value = "".join(m[0][i] for i in keep)
        if (keep and not text[end:end + 1].isalnum() and (value.isupper() or value.islower())
                and iban_ok(value.upper())):
            yield m.start(), end


def cn_ids(text: str) -> Iterator[Span]:
    for m in CN_ID.finditer(text):
        value = m[0].replace(" ", "").replace("-", "")
        if (len(value) == len(m[0]) or CN_ID_GROUPS.fullmatch(m[0])) and cn_id_ok(value):
            yield m.span()


def cards(text: str) -> Iterator[Span]:
    for m in CARD.finditer(text):
        number = digits_of(m[0])
        if (CARD_GROUPS.fullmatch(m[0]) and CARD_PREFIX.match(number)
                and (len(number) >= 13 or number[0] in "56") and luhn_ok(number)   # 12 digits: Maestro only
                and not (len(number) == 18 and _born(number))):   # a resident ID that failed its check: no card
            yield m.span()


def ssns(text: str) -> Iterator[Span]:
    for m in SSN.finditer(text):
        if ssn_ok(m[0].replace(m[1], "")):
            yield m.span()
    for m in SSN_BARE.finditer(text):   # nine bare digits are an SSN only next to a word that says so
        if ssn_ok(m[0]) and SSN_CONTEXT.search(text, max(0, m.start() - 40), m.start()):
            yield m.span()

