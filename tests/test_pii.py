import pytest

from tasks.pii import Scrubber, cn_id_ok, luhn_ok

SCRUB = Scrubber(["email", "phone", "ip_address", "credit_card", "cn_resident_id"], ["US", "GB", "DE", "FR", "CN"])

POSITIVE = [
    ("write to jane.doe+tag@example.co.uk today", "<EMAIL>", "jane.doe"),
    ("call +1 (415) 555-2671 after 5", "<PHONE>", "555-2671"),
    ("London office: +44 20 7946 0958", "<PHONE>", "7946"),
    ("我的手机号是13812345678，谢谢", "<PHONE>", "13812345678"),
    ("或者 +86 138 1234 5678", "<PHONE>", "1234 5678"),
    ("server at 192.168.10.20 is down", "<IP_ADDRESS>", "192.168.10.20"),
    ("ping 2001:db8::8a2e:370:7334 now", "<IP_ADDRESS>", "8a2e"),
    ("card 4111 1111 1111 1111 exp 12/29", "<CREDIT_CARD>", "4111"),
    ("身份证号 11010519491231002X 请核对", "<CN_RESIDENT_ID>", "11010519491231002X"),
]
NEGATIVE = [
    "upgrade to version 1.2.3.4 first",              # version, not an IP
    "released v10.0.0.1 yesterday",
    "the meeting is at 12:30:45 on 2023-01-15",      # time and date, not IPv6 or phone
    "card 4111 1111 1111 1112 is not Luhn-valid",
    "id 110105194912310021 has a bad check digit",
    "pi is 3.14159265 roughly",
    "between 2012-2013 the pages 6435-6440 were read",
    "std::vector<int> and a::b are C++",
    "file of 4155552671 bytes",                      # a bare digit run with no phone context
]


@pytest.mark.parametrize("text,placeholder,raw", POSITIVE)
def test_each_pii_type_is_replaced(text, placeholder, raw):
    scrubbed, counts = SCRUB.scrub(text)
    assert placeholder in scrubbed
    assert raw not in scrubbed
    assert sum(counts.values()) == 1


@pytest.mark.parametrize("text", NEGATIVE)
def test_lookalikes_are_left_alone(text):
    assert SCRUB.scrub(text) == (text, {})


def test_validators():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert cn_id_ok("11010519491231002X") and not cn_id_ok("110105194913310028")
