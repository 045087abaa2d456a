"""Contact details: email addresses (also spelled out: "name at gmail dot com", "name[at]mail[dot]com"), phone numbers
(validated by `phonenumbers`) and IP addresses."""
from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

import phonenumbers
from phonenumbers.phonenumbermatcher import _is_national_prefix_present_if_required

from tasks.data.pii_normalise import SPELLED_AT, SPELLED_DOT, digits_of, unspell

Span = tuple[int, int]

EMAIL = re.compile(r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                   r"(?![A-Za-z0-9_-])")
URL_USERINFO_BEFORE = re.compile(r"://[^\s/?#@]*$")


def emails(text: str) -> Iterator[Span]:
    for m in EMAIL.finditer(text):
        if not URL_USERINFO_BEFORE.search(text, max(0, m.start() - 256), m.start()):   # user:pw@host is no address
            yield m.span()


SPELLED_EMAIL = re.compile(
    rf"[A-Za-z0-9._%+-](?<![A-Za-z0-9._%+-].)[A-Za-z0-9._%+-]*+(?P<at>{SPELLED_AT})[A-Za-z0-9-]++"
    rf"(?:{SPELLED_DOT}[A-Za-z0-9-]++)*{SPELLED_DOT}(?P<tld>[A-Za-z]{{2,24}})(?![A-Za-z0-9_-])")
BARE_WORD = re.compile(r" (?i:at|dot) ")
SPELLED_DOT_IN = re.compile(r" (?i:dot) |[\[({<] ?(?i:dot) ?[\])}>]")
AT_IN_BRACKETS = re.compile(r"at ?[\])}>]")
# with bare " at "/" dot ", prose is the risk ("look at this dot in the corner", "worked at a dot com"): the top-level
# domain must be a common one that is no English word, and the name no word that often comes before "at"
COMMON_TLDS = {"com", "net", "org", "edu", "gov", "info", "biz", "io", "ai", "co", "app", "dev", "xyz", "top", "cn",
               "hk", "tw", "jp", "kr", "sg", "uk", "de", "fr", "es", "nl", "ru", "br", "au", "ca", "ch", "se", "pl",
               "eu"}
PROSE_BEFORE_AT = {"look", "looks", "looked", "looking", "it", "this", "that", "me", "him", "her", "them", "us",
                   "you", "is", "was", "are", "were", "be", "been", "work", "works", "worked", "working", "live",
                   "lives", "lived", "stay", "stayed", "arrive", "arrived", "meet", "available", "located", "found",
                   "here", "there", "one", "bought", "sold", "buy", "sell", "online", "up", "out", "back", "home"}


def spelled_gate(text: str) -> bool:
    """No spelled address without "dot" or a bracketed "at", in any case: a lowercase copy and two literal searches
    take two thirds of the time of one regex that spells out the cases."""
    lower = text.lower()
    return "dot" in lower or AT_IN_BRACKETS.search(lower) is not None


def spelled_emails(text: str) -> Iterator[Span]:
    """Addresses with "at"/"dot" spelled out (any case, bare or in brackets); a bare " at " only with a spelled dot
    too ("docs at python.org" is prose)."""
    for m in SPELLED_EMAIL.finditer(text):
        value = m[0]
        canonical = unspell(value)
        if canonical == value or not EMAIL.fullmatch(canonical):
            continue
        bare_at = m["at"].strip().lower() == "at"
        if bare_at and not SPELLED_DOT_IN.search(value):
            continue
        if BARE_WORD.search(value) and (m["tld"].lower() not in COMMON_TLDS
                                        or canonical.split("@")[0].lower() in PROSE_BEFORE_AT):
            continue
        yield m.span()


# Starts after a boundary: not inside a word, path, time ("12:30") or number, but "Tel:" and a literal "\n" (code
# strings, escaped JSON) are boundaries. A number in a row of numbers is a table cell, not a phone.
PHONE_CANDIDATE = re.compile(
    r"(?:(?<![\w/.+:=-])|(?<=[A-Za-z]:)|(?<=\\[nt]))(?<!\d )"
    r"(?:(?:\+|00)\d{1,3}[ .-]?|\(\+?\d{1,4}\)[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,12}(?:[ .-]\d{2,8}){0,4}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w/:]|[-.]\d| \d)", re.ASCII)
SEPARATOR = re.compile(r"[ .-]")
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
    digits = digits_of(value)
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


def phones(text: str, regions: tuple[str, ...]) -> Iterator[Span]:
    for m in PHONE_CANDIDATE.finditer(text):
        if _phone_ok(m, text, regions):
            yield m.span()


IPV4 = re.compile(r"\d(?<![\w.].)\d{0,2}\.(?:\d{1,3}\.){2}\d{1,3}(?!\w|\.\d)", re.ASCII)
IPV6_GATE = re.compile(r":[0-9A-Fa-f]{1,4}:|::")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{0,4})(?![\w:])",
                  re.ASCII)
VERSION_BEFORE = re.compile(r"\b(?:v|version|ver\.?)\s*$", re.IGNORECASE)


def ipv4s(text: str) -> Iterator[Span]:
    for m in IPV4.finditer(text):
        if VERSION_BEFORE.search(text, max(0, m.start() - 10), m.start()):
            continue
        try:
            ipaddress.IPv4Address(m.group())
        except ValueError:
            continue
        yield m.span()


def ipv6s(text: str) -> Iterator[Span]:
    for m in IPV6.finditer(text):
        value = m.group()
        if len(value) < 6 or not any(c.isdigit() for c in value):   # "a::b", "std::" are C++
            continue
        try:
            ipaddress.IPv6Address(value)
        except ValueError:
            continue
        yield m.span()
