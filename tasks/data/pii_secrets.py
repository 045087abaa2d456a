"""Secrets: private keys, API tokens in their vendors' formats, keyed values (`password = "..."`, `Bearer ...`),
passwords disclosed in prose ("my password is ...", "密码：...") and URL credentials.

A stand-in is judged on the whole token ("sk-test-xxxxxxxx", "your_api_key_here", "<TOKEN>"): a word found inside
one ("ghp_3kTestA9...") says nothing, since a random 40-character token holds some word now and then.
"""
from __future__ import annotations

import re
from collections.abc import Iterator

Span = tuple[int, int]

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
# Keyed secrets and prose passwords are found in a lowercased copy (same offsets): an IGNORECASE regex is ~6x slower.
ASSIGNMENT = re.compile(
    r"(?:passw(?:or)?d|passphrase|pwd|secret|token|(?:api|access|private|auth)(?:\\?_|-)?key|credential)"
    r"[a-z0-9_\\]*[\"']?[ \t]*(?:=|:|=>|:=)[ \t]*"
    r"(?:\"(?P<dq>[^\"\s]{8,256})\"|'(?P<sq>[^'\s]{8,256})'|(?P<bare>[^\s\"'`,;()\[\]{}<>]{8,256})(?![^\s,;]))")
BEARER = re.compile(r"\bbearer\s+(?P<bare>[a-z0-9._~+/-]{20,}=*)(?![a-z0-9._~+/=-])")
AWS_SECRET = re.compile(r"(?:aws|amazon)[\w ]{0,20}?secret[\w ]{0,20}?[^a-z0-9/+\n]{1,6}(?:is[^a-z0-9/+\n]{1,4})?"
                        r"(?P<bare>[a-z0-9/+]{40})(?![a-z0-9/+=])")
# "my password is ...", "the password for the wifi is: ...", "passcode 4821", "我的密码是...", "密码：...": the verb
# or colon is needed ("forgot password", "reset your password" have none), but for "passcode"
PROSE_PASSWORD = re.compile(
    r"(?:pass(?:word|wd|phrase|(?P<passcode>code))|密码|密碼|口令)(?![a-z_])"   # literals first: `re` skips to them
    r"(?:[ \t]+(?:for|of|to|on)(?:[ \t]+[\w.@'-]+){1,3}?)?[\"']?"
    r"(?:[ \t]+(?:is now|is set to|(?:was |has been )?changed to|will be|is|was)(?![a-z])|[ \t]*(?P<op>[:=：])"
    r"|[ \t]*(?:是|为|為|改为|改成|设为|设置为)|(?(passcode)(?=[ \t])|(?!)))"
    r"[ \t]*[:：]?[ \t]*(?P<quote>[\"'`“‘])?(?P<value>[!-~]{1,128})")
MASK = re.compile(r"x{3,}|\*{3,}|\.{3}|<[^>]*>|\{[^}]*\}|\$\{|^\$(?:env:)?\w+$|^%\w+%$|%s|%\(|(.)\1{4,}|123456|abcdef",
                  re.IGNORECASE)   # masks, templates and variables ("$PASSWORD", "%PASSWORD%")
FORMAT_PREFIX = re.compile(r"(?:[spr]k[-_](?:proj|live|test|svcacct|admin)?[-_]?|gh[pousr]_|github_pat_|xox[a-z]-"
                           r"|AKIA|AIza)?")
STAND_IN = re.compile(   # filler words, digits and separators
    r"(?:[\W\d_]|your|my|the|example|sample|dummy|fake|mock|placeholder|change(?:me)?|redacted|insert|replace|paste"
    r"|put|enter|here|goes|test(?:ing)?|demo|foo|bar|baz|secret|passw(?:or)?d|pwd|pass|token|api|key|access|auth"
    r"|private|public|client|id|value|string|new|own|real|actual|with|openai|github|aws|stripe|slack|google)+",
    re.IGNORECASE)
GENERIC_PASSWORD = re.compile(r"(?:my|your|the)?[_-]?(?:pass|pw|pwd|user(?:name)?|admin|root|guest|key)\d{0,3}",
                              re.IGNORECASE)
WORDY = re.compile(r"[^A-Za-z0-9]*(?:[A-Za-z]+\d{0,3}|\d+)(?:[^A-Za-z0-9]+(?:[A-Za-z]+\d{0,3}|\d+))*[^A-Za-z0-9]*")
# a value after "password:" that is no password: words ("incorrect", "String?", "read-only"), lengths ("8-64"),
# algorithms ("sha256"), code (calls, indexing, templates, `self.password`, YAML tags) and paths
NOT_A_PASSWORD = re.compile(r"[-_]*[A-Za-z]+(?:[-/|,_.]+[A-Za-z]+)*[.?!]*|\d{1,3}(?:[-~+]\d{0,3})?[A-Za-z]*"
                            r"|(?:md5|sha-?\d*|base64|utf-?8|bcrypt|scrypt|argon2\w*|pbkdf2\w*|hmac\w*|aes-?\d+"
                            r"|rsa-?\d+)[\w-]*|[a-z_]\w*(?:\.[A-Za-z_]\w*)+|![A-Za-z]+|(?:/|~/|\./).*", re.IGNORECASE)
MARKDOWN_ESCAPE = re.compile(r"\\(?=[^\w\s]|_)")   # ShareGPT's markdown: "\_", "\*"
CODE = re.compile(r"[()\[\]{}<>]|%[sd]")   # calls, indexing, templates ("getpass()", "environ[...]", "${X}", "%s")
IDENTIFIER = re.compile(r"[A-Za-z_]\w*")
TRAILING, QUOTE, CLOSERS = re.compile(r"[.,;:?]+$"), re.compile("[\"'`]"), {")": "(", "]": "[", "}": "{"}


def is_placeholder(value: str) -> bool:
    """A stand-in, not a credential: a mask ("****", "xxxx", "..."), a template ("<token>", "${KEY}"), a generic
    password ("admin123"), AWS's documentation keys (…EXAMPLE) or, after a vendor prefix, nothing but filler words,
    digits and separators ("your_api_key_here", "sk-test-1234")."""
    if MASK.search(value) or GENERIC_PASSWORD.fullmatch(value) or value.endswith(("EXAMPLE", "EXAMPLEKEY")):
        return True
    start = FORMAT_PREFIX.match(value).end()   # without one, digits and symbols alone are a PIN, not a stand-in
    return bool(STAND_IN.fullmatch(value, start)) and (start > 0 or any(c.isalpha() for c in value))


def looks_random(value: str) -> bool:
    """A credential rather than a word, identifier, path, number or placeholder: varied, letters mixed with digits or
    symbols inside a word ("self.api_key", "/path/to/creds.json", "release-2023" are words)."""
    value = MARKDOWN_ESCAPE.sub("", value)
    if (len(value) < 8 or len(set(value)) < 6 or is_placeholder(value) or WORDY.fullmatch(value)
            or "://" in value):   # a URL; its credentials are url_credentials
        return False
    return any(c.isalpha() for c in value) and any(not c.isalpha() for c in value)


def pem_keys(text: str) -> Iterator[Span]:
    for m in PEM_KEY.finditer(text):
        body = m["body"] if m["body"] is not None else m["cut"]
        if sum(c.isalnum() for c in body) >= 64:   # "...", "<your key>" in docs are not keys
            yield m.span()


def tokens(text: str) -> Iterator[Span]:
    for m in TOKEN.finditer(text):
        if not is_placeholder(m[0]) and len(set(m[0])) >= 8:
            yield m.span()


def _prose_password(m: re.Match, text: str) -> Span | None:
    """The value's span when it reads as a disclosed password: 4-64 characters up to a quote, without the sentence's
    closing punctuation, holding a digit or symbol, and not a placeholder, a word or code (`getpass()`,
    `os.environ[...]`; after "=" unquoted, a variable)."""
    start = m.start("value")
    value = TRAILING.sub("", QUOTE.split(text[start:m.end("value")])[0])
    while value and value[-1] in CLOSERS and CLOSERS[value[-1]] not in value:   # "(my password is abc123)"
        value = TRAILING.sub("", value[:-1])
    plain = MARKDOWN_ESCAPE.sub("", value)
    if (not 4 <= len(plain) <= 64 or is_placeholder(plain) or NOT_A_PASSWORD.fullmatch(plain)
            or CODE.search(plain) or (m["op"] == "=" and not m["quote"] and IDENTIFIER.fullmatch(plain))):
        return None
    return start, start + len(value)


def keyed_secrets(text: str) -> Iterator[Span]:
    """The value of `password = "..."`-style assignments, of `Bearer ...`, of an AWS secret key next to its name, and
    of a password disclosed in prose."""
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
    if "pass" in lower or "密" in lower or "口令" in lower:   # a cheap gate: one text in ~20 passes it
        for m in PROSE_PASSWORD.finditer(lower):
            span = _prose_password(m, text)
            if span:
                yield span


URL_CREDENTIALS = re.compile(r"://(?P<userinfo>[^\s:/?#@\[\]]*:(?P<password>[^\s/?#]+))@(?=[\w\[])")
# a connection string's password is a secret whatever it looks like ("Pass123", "password"); only a mask is not
URL_MASK = re.compile(r"x{3,}|X{3,}|\*{3,}|\.{3,}|<[^<>]*>|\{[^{}]*\}|\$\{[^{}]*\}|\$[A-Za-z_]\w*|%s|%\(\w+\)s")


def url_credentials(text: str) -> Iterator[Span]:
    """`scheme://user:password@host`: only the userinfo, and not when the password is a mask (`****`, `<password>`,
    `${DB_PASSWORD}`)."""
    for m in URL_CREDENTIALS.finditer(text):
        if not URL_MASK.fullmatch(m["password"]):
            yield m.span("userinfo")
