"""The hard set of benchmarks/pii.py: PII written the way people write it, and look-alikes that must stay.

Ten classes, each with positives in English and in Chinese context (full-width phones, resident IDs, cards and emails;
spelled-out emails; resident IDs split by spaces or dashes; cards split by dots, spaces or dashes; lower-case IBANs;
passwords in prose; vendor-format tokens that hold "test" or "here") and look-alikes of the same shape (full-width
prices and dates, versions, order numbers too short or failing their checksum, "forgot password" prose, passwords read
from the environment, placeholder keys). Values are random, valid for their format where a positive, from one seed.
Also the value generators the Chinese part of the main corpus uses (`fill`, `cn_mobile`, `cn_resident_id`).
"""
from __future__ import annotations

import datetime as dt
import itertools
import random
import string
from dataclasses import dataclass

import phonenumbers

Spans = list[tuple[str, int, int]]
CLASSES = {   # class: the type its positives are labelled with
    "fullwidth_phone": "phone", "fullwidth_cn_id": "cn_resident_id", "fullwidth_card": "credit_card",
    "fullwidth_email": "email", "spelled_email": "email", "spaced_cn_id": "cn_resident_id",
    "separated_card": "credit_card", "lowercase_iban": "iban", "prose_password": "secret", "word_in_token": "secret"}
WIDE = {c: chr(c + 0xFEE0) for c in range(0x21, 0x7F)} | {0x20: "\u3000"}


@dataclass(frozen=True)
class Sample:
    cls: str
    text: str
    spans: Spans          # empty for a look-alike
    lookalike: bool


def fill(template: str, values: dict[str, tuple[str, str | None]]) -> tuple[str, Spans]:
    """Formats `template`; `values` maps a slot to (text, type or None), and each typed slot becomes a labelled span."""
    text, spans = "", []
    for literal, slot, _, _ in string.Formatter().parse(template):
        text += literal
        if slot:
            value, kind = values[slot]
            if kind:
                spans.append((kind, len(text), len(text) + len(value)))
            text += value
    return text, spans


CN_MOBILE_PREFIXES = ["130", "131", "135", "138", "139", "147", "150", "152", "158", "166", "177", "180", "186", "199"]
CN_REGIONS = ["110101", "310104", "440305", "510107", "330106", "420111", "320102", "610113"]


def cn_mobile(rng: random.Random) -> str:
    d = rng.choice(CN_MOBILE_PREFIXES) + "".join(rng.choices(string.digits, k=8))
    a, b, c = d[:3], d[3:7], d[7:]
    return rng.choice([d, f"{a} {b} {c}", f"{a}-{b}-{c}", f"+86 {a} {b} {c}", f"+86-{a}-{b}-{c}", f"+86{d}",
                       f"0086 {d}", f"(+86) {a} {b} {c}"])


def cn_resident_id(rng: random.Random, valid: bool = True) -> str:
    """GB 11643: region, birth date, sequence, then the MOD 11-2 check (weights 2^(17-i) mod 11, computed here);
    `valid=False`: any other check character."""
    born = dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(20000))
    body = rng.choice(CN_REGIONS) + born.strftime("%Y%m%d") + f"{rng.randrange(1000):03d}"
    check = "10X98765432"[sum(int(c) * pow(2, 17 - i, 11) for i, c in enumerate(body)) % 11]
    return body + (check if valid else rng.choice([c for c in "0123456789" if c != check]))


def wide(value: str) -> str:
    return "".join(WIDE.get(ord(c), c) for c in value)


def digits(rng: random.Random, k: int) -> str:
    return "".join(rng.choices(string.digits, k=k))


def luhn_complete(body: str, rng: random.Random, valid: bool = True) -> str:
    total = sum(d - 9 if d > 9 else d for d in (int(c) * (1 if i % 2 else 2) for i, c in enumerate(reversed(body))))
    check = (10 - total % 10) % 10
    return body + str(check if valid else (check + rng.randint(1, 9)) % 10)


def card(rng: random.Random, sep: str, valid: bool = True) -> str:
    """Visa, Mastercard, Amex, Discover or UnionPay, in its own grouping, `sep` between groups."""
    prefix, length, groups = rng.choice([("4", 16, (4, 4, 4, 4)), ("5" + rng.choice("12345"), 16, (4, 4, 4, 4)),
                                         ("2221", 16, (4, 4, 4, 4)), ("3" + rng.choice("47"), 15, (4, 6, 5)),
                                         ("6011", 16, (4, 4, 4, 4)), ("62", 19, (4, 4, 4, 4, 3))])
    number = luhn_complete(prefix + digits(rng, length - len(prefix) - 1), rng, valid)
    return sep.join(number[a:b] for a, b in itertools.pairwise([0, *itertools.accumulate(groups)]))


IBAN_BBANS = {"DE": [("n", 18)], "GB": [("a", 4), ("n", 14)], "FR": [("n", 10), ("c", 11), ("n", 2)],
              "NL": [("a", 4), ("n", 10)], "ES": [("n", 20)], "IT": [("a", 1), ("n", 10), ("c", 12)]}
IBAN_CHARS = {"n": string.digits, "a": string.ascii_uppercase, "c": string.ascii_uppercase + string.digits}


def iban(rng: random.Random, valid: bool = True) -> str:
    """An IBAN of one of six countries, its BBAN random in the country's shape, its mod-97 check digits right or not."""
    country = rng.choice(sorted(IBAN_BBANS))
    bban = "".join("".join(rng.choices(IBAN_CHARS[kind], k=n)) for kind, n in IBAN_BBANS[country])
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check if valid else (check + rng.randint(1, 90)) % 97 + 2:02d}{bban}"


US_AREAS = ["212", "415", "646", "617", "303", "206", "312", "213"]


def phone(rng: random.Random, chinese: bool) -> str:
    """A Chinese mobile, or a US or UK number that `phonenumbers` calls valid."""
    if chinese:
        return cn_mobile(rng)
    while True:
        a, e, line = rng.choice(US_AREAS), str(rng.randint(200, 999)), digits(rng, 4)
        value = rng.choice([f"+1 ({a}) {e}-{line}", f"+1 {a} {e} {line}", f"({a}) {e}-{line}",
                            f"+44 7{rng.randint(400, 999)} {digits(rng, 6)}"])
        if phonenumbers.is_valid_number(phonenumbers.parse(value, "US")):
            return value


LOCALS = ["zhang.wei", "li.na", "wang_fang", "liu.yang", "chen.jie", "john.smith", "mary.jones", "d.miller", "anna_k"]
DOMAINS = ["gmail.com", "qq.com", "163.com", "outlook.com", "sina.com.cn", "company.co.uk", "mail.acme.org",
           "foxmail.com", "yahoo.com"]
SPELLINGS = [(" at ", " dot "), ("[at]", "[dot]"), (" (at) ", " (dot) "), (" [at] ", " [dot] "), (" AT ", " DOT "),
             ("{at}", "{dot}"), ("[at]", "."), ("(at)", "."), ("@", " dot ")]


def email(rng: random.Random, spelled: bool = False) -> str:
    local, domain = rng.choice(LOCALS) + rng.choice(["", str(rng.randrange(100))]), rng.choice(DOMAINS)
    at, dot = rng.choice(SPELLINGS) if spelled else ("@", ".")
    return local + at + domain.replace(".", dot)


def spaced_cn_id(rng: random.Random, valid: bool = True) -> str:
    value, sep = cn_resident_id(rng, valid), rng.choice(" -")
    cuts = rng.choice([(6, 14), (4, 8, 12, 16), (3, 6, 10, 14), (6, 10, 14)])
    return sep.join(value[a:b] for a, b in itertools.pairwise((0, *cuts, 18)))


WORDS = ["sunflower", "dragon", "coffee", "tiger", "panda", "river", "maple", "ocean", "falcon", "violet", "rocket"]
SYMBOLS = "!@#$%&*^~-_+="


def password(rng: random.Random) -> str:
    """A word with digits (and a symbol), or 8-12 random characters with a digit and a symbol."""
    if rng.random() < 0.5:
        word = rng.choice(WORDS)
        return rng.choice([word, word.capitalize()]) + digits(rng, rng.randint(2, 4)) + rng.choice(["", "!", "#"])
    chars = rng.choices(string.ascii_letters + string.digits + SYMBOLS, k=rng.randint(6, 10))
    return "".join(chars + [rng.choice(string.digits), rng.choice(SYMBOLS)])


def pin(rng: random.Random) -> str:
    return digits(rng, rng.choice([4, 6]))


def token_with_word(rng: random.Random) -> str:
    """A vendor-format token, random but for "test" or "here" somewhere inside its body."""
    alnum = string.ascii_letters + string.digits
    prefix, chars, n = rng.choice([("ghp_", alnum, 36), ("sk-proj-", alnum, 40), ("AKIA", string.ascii_uppercase
                                   + "234567", 16), ("AIza", alnum + "-_", 35), ("xoxb-", alnum, 24)])
    word = rng.choice(["test", "Test", "here", "Here"])
    word = word.upper() if prefix == "AKIA" else word
    body, at = "".join(rng.choices(chars, k=n - len(word))), rng.randrange(n - len(word) + 1)
    body = body[:at] + word + body[at:]
    return prefix + (f"{digits(rng, 12)}-{digits(rng, 13)}-{body}" if prefix == "xoxb-" else body)


def lower_iban(rng: random.Random) -> str:
    value = iban(rng).lower()
    return rng.choice([value, " ".join(value[i:i + 4] for i in range(0, len(value), 4))])


# class: (English templates, Chinese templates, the value of slot {v}: make(rng, chinese)); {pin} is a passcode
POSITIVES = {
    "fullwidth_phone": (["Call me on {v} (ＶＩＰ line).", "Ｍｙ ｎｕｍｂｅｒ： {v}"], ["我的手机号是{v}，有事联系（工作日）。", "电话：{v}！"],
                        lambda r, zh: wide(phone(r, zh))),
    "fullwidth_cn_id": (["My ID is {v}, see the form.", "ＩＤ： {v}"], ["身份证号码：{v}，请核对（必填）。", "他的身份证是{v}。"],
                        lambda r, zh: wide(cn_resident_id(r))),
    "fullwidth_card": (["Card number {v}, exp 12/29.", "ｃａｒｄ： {v}"], ["卡号：{v}，有效期１２／２９。", "银行卡{v}，谢谢！"],
                       lambda r, zh: wide(card(r, r.choice([" ", "", "-"])))),
    "fullwidth_email": (["Write to {v} (ｔｈａｎｋｓ)", "Email: {v}"], ["邮箱：{v}，谢谢！", "请发到{v}（注明姓名）。"],
                        lambda r, zh: wide(email(r)) if r.random() < 0.5 else email(r).replace("@", "＠")),
    "spelled_email": (["Mail me: {v} if anything breaks.", "contact {v} for access"], ["我的邮箱是 {v}，谢谢", "联系邮箱：{v}"],
                      lambda r, zh: email(r, spelled=True)),
    "spaced_cn_id": (["My ID card number is {v} if the form needs it.", "ID: {v}"], ["身份证号 {v} 请核对", "身份证：{v}，谢谢"],
                     lambda r, zh: spaced_cn_id(r)),
    "separated_card": (["Card {v}, exp 12/29.", "pay with {v} please"], ["卡号 {v}，有效期12/29", "信用卡：{v}"],
                       lambda r, zh: card(r, r.choice([".", " ", "-"]))),
    "lowercase_iban": (["my iban is {v} thanks", "send it to iban {v}."], ["我的账户 iban：{v}，谢谢", "收款 IBAN {v}"],
                       lambda r, zh: lower_iban(r)),
    "prose_password": (["my password is {v}", "Password: {v}", "The password for the admin panel is {v}.",
                        "the wifi password is {v}, don't share it", "the passcode is {pin}.",
                        "passcode {pin} opens the door"],
                       ["我的密码是{v}，别告诉别人。", "密码：{v}", "登录密码为{v}，请尽快修改。", "wifi密码是{v}", "门禁密码：{pin}",
                        "账号：zhangwei，密码：{v}"], lambda r, zh: password(r)),
    "word_in_token": (["export GITHUB_TOKEN={v}", "use this key: {v}", "my token is {v} (don't share)"],
                      ["我的 API key 是 {v}，别外传", "令牌：{v}", "把 {v} 填到配置里"], lambda r, zh: token_with_word(r)),
}


def _wide_number(rng: random.Random) -> str:
    """Full-width prices, dates, times, room and order numbers."""
    y, m, d, n = rng.randint(2000, 2030), rng.randint(1, 12), rng.randint(1, 28), rng.randint(100, 99999)
    return rng.choice([f"价格：{wide(str(n))}元", f"合计：￥{wide(f'{n}.00')}",
                       f"Total: ＄{wide(f'{n // 100},{n % 1000:03d}.00')}",
                       f"{wide(str(y))}年{wide(str(m))}月{wide(str(d))}日", f"日期：{wide(f'{y}-{m:02d}-{d:02d}')}",
                       f"订单号：{wide(digits(rng, rng.randint(5, 8)))}", f"Order ＃{wide(digits(rng, 6))} shipped",
                       f"房间号{wide(digits(rng, 4))}，时间：{wide('12')}：{wide('30')}"])


def _version(rng: random.Random) -> str:
    """Versions, builds, dates, decimals and coordinates: dotted digit runs that are no card."""
    a, b, c, d = rng.randint(1, 20), rng.randint(0, 20), rng.randint(0, 99), rng.randint(1000, 99999)
    return rng.choice([f"upgrade to version {a}.{b}.{c}.{rng.randint(0, 9)} first", f"released v{a}.{b}.{c}",
                       f"Windows {a}.0.{d}.{rng.randint(1000, 9999)} 已更新", f"版本 v{a}.{b}.{c} 发布于 2023.05.01",
                       f"order {digits(rng, 4)}.{digits(rng, 4)} shipped on 2023-05-01", f"pi is 3.{digits(rng, 15)}",
                       f"坐标 {rng.randint(10, 99)}.{digits(rng, 6)}, {rng.randint(100, 179)}.{digits(rng, 6)}"])


def _hex_id(rng: random.Random) -> str:
    return f"session {rng.choice(['de', 'gb', 'fr'])}{digits(rng, 2)}{''.join(rng.choices('0123456789abcdef', k=18))}"


# class: look-alikes that must stay as they are, or their generators
LOOKALIKES = {
    "fullwidth_phone": [_wide_number],
    "fullwidth_cn_id": [lambda r: f"身份证号：{wide(cn_resident_id(r, valid=False))}（校验位错误）",
                        lambda r: f"订单号：{wide('2023' + digits(r, 14))}",
                        lambda r: f"ID {wide(cn_resident_id(r, valid=False))} is wrong"],
    "fullwidth_card": [lambda r: f"卡号：{wide(card(r, r.choice([' ', '', '-']), valid=False))}",
                       lambda r: f"流水号：{wide('2023' + digits(r, 12))}",
                       lambda r: f"金额：{wide(f'{r.randint(1, 99)},{r.randint(100, 999)}.00')}元"],
    "fullwidth_email": [lambda r: f"＠{r.choice(['张三', '李四', '王五'])} 你好，收到请回复", "请在微博上＠我，谢谢",
                        lambda r: f"Reply to ＠{r.choice(LOCALS).replace('.', '_')} on Twitter", "ｅｍａｉｌ：ｎｏｎｅ",
                        lambda r: f"苹果＠{wide(str(r.randint(2, 20)))}元／斤"],
    "spelled_email": ["look at this dot in the corner", "he worked at a dot com startup in 1999",
                      "the docs are at docs.python.org", "we compute the dot product at each step",
                      "type the (at) symbol, then the domain", "我们在 at 公司见面，点击 dot 按钮",
                      "connect the dots at the end dot by dot"],
    "spaced_cn_id": [lambda r: f"身份证号 {spaced_cn_id(r, valid=False)} 校验失败",
                     lambda r: f"ID {spaced_cn_id(r, valid=False)} fails the check",
                     lambda r: f"批次 {digits(r, 3)} {digits(r, 3)}", "日期 2023 05 01 12 30 45"],
    "separated_card": [lambda r: f"card {card(r, r.choice(['.', ' ', '-']), valid=False)} was declined", _version],
    "lowercase_iban": [lambda r: f"iban {iban(r, valid=False).lower()} is wrong", _hex_id,
                       lambda r: f"型号 {r.choice(['ab', 'cd', 'nl'])}{digits(r, 2)} {digits(r, 4)} {digits(r, 4)}"],
    "prose_password": [
        "forgot password? reset your password here", "password is incorrect, try again", "密码错误，忘记密码了怎么办",
        'password = os.environ["DB_PASSWORD"]', "password = getpass()", "password: ********", "密码长度为8-16位",
        "password: <your password>", "请输入密码：", "the password must be at least 8 characters",
        "the password is stored as a bcrypt hash", "password: str", "password = request.form['password']",
        "重置密码请点击链接", "the password is hashed with sha256 before saving"],
    "word_in_token": [
        "sk-test-xxxxxxxx", "OPENAI_API_KEY=your_api_key_here", "token: <TOKEN>", "export GITHUB_TOKEN=ghp_" + "x" * 36,
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE", "api_key = 'YOUR_API_KEY_HERE'", "把 sk-your-key-here 换成你的密钥",
        "Authorization: Bearer <your-token>", "SLACK_TOKEN=xoxb-your-token-here"],
}


def hard_samples(seed: int, per_class: int = 40) -> list[Sample]:
    """`per_class` positives per class (English and Chinese in turn) and half as many look-alikes."""
    rng, out = random.Random(f"pii-hard-{seed}"), []
    for cls, (english, chinese, make) in POSITIVES.items():
        for i in range(per_class):
            templates = chinese if i % 2 else english
            text, spans = fill(templates[i // 2 % len(templates)],
                               {"v": (make(rng, i % 2 == 1), CLASSES[cls]), "pin": (pin(rng), CLASSES[cls])})
            out.append(Sample(cls, text, spans, False))
        looks = LOOKALIKES[cls]
        for i in range(per_class // 2):
            look = looks[i % len(looks)]
            out.append(Sample(cls, look(rng) if callable(look) else look, [], True))
    return out
