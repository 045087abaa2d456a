import itertools
import pickle

import pytest

from tasks.data.pii import Scrubber, cn_id_ok, iban_ok, looks_random, luhn_ok, ssn_ok
from tests.conftest import configured

SCRUB = Scrubber(configured("clean.pii"))

# (text, placeholder, a raw fragment that must be gone)
POSITIVE = [
    ("write to jane.doe+tag@example.co.uk today", "<EMAIL>", "jane.doe"),
    ("邮箱是zhang.san@example.com，谢谢", "<EMAIL>", "zhang.san"),
    ("call +1 (415) 555-2671 after 5", "<PHONE>", "555-2671"),
    ("London office: +44 20 7946 0958", "<PHONE>", "7946"),
    ("Tel:+49 30 901820 (Berlin)", "<PHONE>", "901820"),
    ("vCard TEL;type=pref:(267) 555-0142", "<PHONE>", "555-0142"),
    ("call me at 650-752-7354x549", "<PHONE>", "x549"),
    ("我的手机号是13812345678，谢谢", "<PHONE>", "13812345678"),
    ("或者 +86 138 1234 5678", "<PHONE>", "1234 5678"),
    ("手机：(+86) 139-8765-4321", "<PHONE>", "8765"),
    ("电话0086 13912345678，谢谢", "<PHONE>", "13912345678"),
    ("或+8613712345678", "<PHONE>", "13712345678"),
    ("server at 192.168.10.20 is down", "<IP_ADDRESS>", "192.168.10.20"),
    ("the gateway is 10.0.0.1.", "<IP_ADDRESS>", "10.0.0.1"),
    ("dns 8.8.8.8 is public", "<IP_ADDRESS>", "8.8.8.8"),            # too few digits for the number gate's first rule
    ("ping 2001:db8::8a2e:370:7334 now", "<IP_ADDRESS>", "8a2e"),
    ("card 4111 1111 1111 1111 exp 12/29", "<CREDIT_CARD>", "4111"),
    ("amex 3782-822463-10005 on file", "<CREDIT_CARD>", "822463"),
    ("mastercard 2221000000000009", "<CREDIT_CARD>", "2221000000000009"),
    ("pay to DE89 3704 0044 0532 0130 00 please", "<IBAN>", "3704"),
    ("IBAN GB82WEST12345698765432.", "<IBAN>", "GB82WEST"),
    ("<IBAN>FR1420041010050500013M02606</IBAN>", "<IBAN>", "20041010"),
    ("my SSN is 123-45-6780 ok", "<US_SSN>", "6780"),
    ("ssn 078 05 1121 on the form", "<US_SSN>", "078 05"),
    ("Social Security number: 536225432", "<US_SSN>", "536225432"),
    ("身份证号 11010519491231002X 请核对", "<CN_RESIDENT_ID>", "11010519491231002X"),
    ("export AWS_ACCESS_KEY_ID=AKIAZ2X7Q3LMNOPQRS4T", "<SECRET>", "AKIAZ2X7"),
    ("my AWS secret access key is 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", "<SECRET>", "wJalrXUtn"),
    ("token: ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5", "<SECRET>", "ghp_aB3"),
    ("SLACK=xoxb-720394857163-4829301746528-Kq7ZrT2mXw9LbN4pVd8sHj3F", "<SECRET>", "xoxb-7203"),
    ("OPENAI_API_KEY=sk-proj-Ab3dEf5gHi7jKl9mNo1pQr3sTu5vWx7yZa9bCd1e", "<SECRET>", "sk-proj-Ab3"),
    ('stripe.api_key = "sk_live_51Hx3kR2eZvKYlo2C8fJ9q0wT"', "<SECRET>", "51Hx3k"),
    ("maps?key=AIzaSyD4f7Hk2Lm9Qw3Er5Ty8Ui1Op0As6Df2Gh", "<SECRET>", "AIzaSyD4"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlF",
     "<SECRET>", "eyJzdWIi"),
    ('db_password = "Tr0ub4dor&3x"', "<SECRET>", "Tr0ub4dor"),
    ("DB_PASSWORD=s3cr3tP4ssw0rd!", "<SECRET>", "s3cr3t"),
]
NEGATIVE = [
    "upgrade to version 1.2.3.4 first",              # version, not an IP
    "released v10.0.0.1 yesterday",
    "the meeting is at 12:30:45 on 2023-01-15",      # time and date, not IPv6 or phone
    "card 4111 1111 1111 1112 is not Luhn-valid",
    "php artisan brick-game 2 5 19 17 16 14 12 5 12 14 16 17 18",
    "area = 50.26548245743669",                      # a float is not a card
    "id 110105194912310021 has a bad check digit",
    "pi is 3.14159265 roughly",
    "between 2012-2013 the pages 6435-6440 were read",
    "std::vector<int> and a::b are C++",
    "file of 4155552671 bytes",                      # a bare digit run with no phone context
    "The restaurant is located at 40187 263 Main Street",   # ZIP and street number, not a German phone
    "row: 304 381 305 259 262 259 114959 12733",     # table cells
    "ISBN 978-3-16-148410-0 and order #2023-0815-7731",
    "order number 20230501123456789012 shipped",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b fixed it",          # git SHA
    "request id 123e4567-e89b-12d3-a456-426614174000",                   # UUID
    "sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "IBAN DE89 3704 0044 0532 0130 01 has a wrong check digit",
    "SSN 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567, 123-45-0000 and 123-45-6789 are invalid",
    "account 536225432 (no context word)",
    'api_key = "YOUR_API_KEY"  # or OPENAI_API_KEY=sk-...',
    'password: ********\ntoken = "<token>"\nsecret = "xxxxxxxxxxxx"',
    "export GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
    "the tokenizer = 'bert-base-uncased' and max_tokens = 2048",
    "password = request.form['password'] ; api_key = self.api_key",
    "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----",
    "mongodb+srv://<username>:<password>@cluster0.example.net and postgres://app:${DB_PASSWORD}@db:5432/x",
    "redis://default:****@cache.internal:6379 and amqp://guest:%s@mq and mysql://root:xxxxxxxx@db/app",
    "I use scikit-learn via sk-learn-contrib-imbalanced-learn",
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


@pytest.mark.parametrize("url", [
    "mongodb+srv://Admin:Pass123@cluster0.abcde.mongodb.net/test",        # 7 times in ShareGPT: real-looking, short
    "postgresql://doadmin:AVNS_x7Gq2bPz@db-postgresql-fra1.b.db.ondigitalocean.com:25060/defaultdb",
    "postgres://user:password@localhost:5432/db",                         # a word, but in a connection string
    "mysql://root:root@db.shop.internal:3306/shop",
])
def test_a_connection_string_password_is_scrubbed_whatever_it_looks_like(url):
    scrubbed, counts = SCRUB.scrub(f"connect with {url} please")
    assert counts == {"url_credentials": 1} and "<URL_CREDENTIALS>@" in scrubbed
    assert url.split("://")[1].split("@")[0] not in scrubbed


def test_url_credentials_replace_only_the_userinfo_and_are_no_email():
    text = "clone https://deploy:Xk9vQ2mL7pR4@git.example.com/acme/app.git"
    assert SCRUB.scrub(text) == ("clone https://<URL_CREDENTIALS>@git.example.com/acme/app.git",
                                 {"url_credentials": 1})
    token_in_url = "https://bot:ghp_aB3dE5fG7hI9jK1lM3nO5pQ7rS9tU1vW3xY5@github.com/x"
    assert SCRUB.scrub(token_in_url)[1] == {"url_credentials": 1}    # the password is not a secret twice


def test_private_key_block_is_replaced_whole():
    body = "\n".join(["MIIEowIBAAKCAQEAx9f3Kq1Lp0wJalrXUtnFEMIK7MDENGbPxRfiCYz9f3Kq1Lp0abcd"] * 4)
    text = f"key:\n-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----\ndone"
    assert SCRUB.scrub(text) == ("key:\n<SECRET>\ndone", {"secret": 1})


def test_specific_detectors_win_over_generic_ones():
    text = "card 4111-1111-1111-1111, IBAN DE89370400440532013000, ID 11010519491231002X, SSN 123-45-6780"
    scrubbed, counts = SCRUB.scrub(text)
    assert scrubbed == "card <CREDIT_CARD>, IBAN <IBAN>, ID <CN_RESIDENT_ID>, SSN <US_SSN>"
    assert "phone" not in counts


def test_detect_returns_the_sorted_non_overlapping_spans_scrub_replaces():
    text = "mail a@b.io or +44 20 7946 0958; card 4111 1111 1111 1111"
    spans = SCRUB.detect(text)
    assert [kind for kind, _, _ in spans] == ["email", "phone", "credit_card"]
    assert all(e1 <= s2 for (_, _, e1), (_, s2, _) in itertools.pairwise(spans))
    assert [text[s:e] for _, s, e in spans] == ["a@b.io", "+44 20 7946 0958", "4111 1111 1111 1111"]


def test_only_configured_types_are_scrubbed():
    only_email = Scrubber(configured("clean.pii", types=["email"]))
    assert only_email.scrub("a@b.io +44 20 7946 0958") == ("<EMAIL> +44 20 7946 0958", {"email": 1})


def test_scrubber_pickles_for_worker_processes():
    clone = pickle.loads(pickle.dumps(SCRUB))
    text = "call +1 (415) 555-2671 or mail a@b.io"
    assert clone.scrub(text) == SCRUB.scrub(text)


def test_validators():
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112")
    assert cn_id_ok("11010519491231002X") and not cn_id_ok("110105194913310028")
    assert iban_ok("GB82WEST12345698765432") and not iban_ok("GB83WEST12345698765432")
    assert not iban_ok("GB82WEST1234569876543")                     # one character short for GB
    assert ssn_ok("536225432") and not any(map(ssn_ok, ["000123456", "666123456", "912345678", "123004567",
                                                        "123450000", "111111111", "078051120"]))
    assert looks_random("Tr0ub4dor&3x") and looks_random("5f4dcc3b5aa765d61d8327deb882cf99")
    assert not any(map(looks_random, ["self.api_key", "/path/to/creds.json", "changeme123", "release-2023",
                                      "********", "<your-token>", "${API_KEY}"]))


def test_missing_ner_model_fails_clearly_without_downloading(monkeypatch):
    import spacy.cli

    monkeypatch.setattr(spacy.cli, "download", lambda *a, **k: pytest.fail("tried to download a model"))
    with pytest.raises(ValueError, match="en_core_web_nonexistent.*install"):
        Scrubber(configured("clean.pii", ner_model="en_core_web_nonexistent"))


def test_ner_model_from_a_directory_scrubs_names_and_places(tmp_path, monkeypatch):
    import spacy
    import spacy.cli

    monkeypatch.setattr(spacy.cli, "download", lambda *a, **k: pytest.fail("tried to download a model"))
    nlp = spacy.blank("en")
    nlp.add_pipe("entity_ruler").add_patterns([{"label": "PERSON", "pattern": "Alice Smith"},
                                               {"label": "GPE", "pattern": "Paris"}])
    nlp.to_disk(tmp_path / "ner")
    scrubber = Scrubber(configured("clean.pii", ner_model=str(tmp_path / "ner")))
    text = "Alice Smith moved to Paris; mail alice@example.com"
    expected = ("<PERSON> moved to <LOCATION>; mail <EMAIL>", {"person": 1, "location": 1, "email": 1})
    assert scrubber.scrub(text) == expected
    assert pickle.loads(pickle.dumps(scrubber)).scrub(text) == expected
