"""Canaries are valid secrets of their kind, the scrubber removes each, and the scan finds one wherever it hides."""
import json
import re
import sqlite3

import phonenumbers

from tasks.common.jsonl import write_jsonl
from tasks.data.canaries import EVERY_NTH_ROW, make_canaries, scan
from tasks.data.ingest import ingest
from tasks.data.pii import Scrubber, cn_id_ok
from tests.conftest import configured, conversation, reading

CANARIES = make_canaries(8, seed=0)


def test_canaries_are_valid_unique_and_follow_the_seed():
    by_kind = {c.kind: c.secret for c in CANARIES}
    assert re.fullmatch(r"[a-z]+\.[a-z]+\d\d@[a-z]+\.com", by_kind["email"])
    number = phonenumbers.parse(by_kind["phone"])
    assert phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE
    assert cn_id_ok(by_kind["cn_id"])
    assert re.fullmatch(r"sk-proj-[A-Za-z0-9]{39}\d", by_kind["api_key"])
    assert len({c.secret for c in CANARIES}) == 8
    assert make_canaries(8, seed=0) == CANARIES and make_canaries(8, seed=1) != CANARIES


def test_the_scrubber_removes_every_canary_from_its_sentence():
    scrubber = Scrubber(configured("clean.pii"))
    for canary in CANARIES:
        text, counts = scrubber.scrub(canary.sentence)
        assert not canary.leaked_in(text) and sum(counts.values()) == 1, (canary.kind, text)
        assert canary.leaked_in(canary.sentence)


def test_ingest_plants_them_spread_out_and_counts_still_reconcile(tmp_path):
    rows = [conversation(f"Question number {i}?", f"Answer number {i}.", f"r{i}") for i in range(300)]
    write_jsonl(tmp_path / "raw.jsonl", rows)
    report = ingest(reading(tmp_path / "raw.jsonl"), tmp_path / "out.jsonl", tmp_path / "q.jsonl",
                    tmp_path / "report.json", canaries=CANARIES)
    assert report["canaries_planted"] == 8 and report["rows_kept"] == 300
    assert report["canary_rows"] == [f"r{i * EVERY_NTH_ROW}" for i in range(8)]
    out = {r["id"]: r for r in map(json.loads, (tmp_path / "out.jsonl").read_text().splitlines())}
    first = out["r0"]["messages"][1]["content"]
    assert first == f"{CANARIES[0].sentence} Answer number 0."
    assert out["r1"]["messages"][1]["content"] == "Answer number 1."


def test_scan_finds_a_canary_in_any_file_and_skips_the_planted_input(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "corpus.jsonl").write_text(CANARIES[0].sentence)
    with sqlite3.connect(tmp_path / "store.db") as db:       # an MLflow-like store: text inside a binary file
        db.execute("create table params (key text, value text)")
        db.execute("insert into params values ('note', ?)", (f"mail {CANARIES[4].secret}",))
    (tmp_path / "weights.bin").write_bytes(b"\0" * 5000 + CANARIES[3].core.encode() + b"\0" * 5000)
    (tmp_path / "phone.log").write_text("dialled " + re.sub(r"\D", "", CANARIES[1].secret))   # digits, unformatted
    (tmp_path / "clean.txt").write_text("You can also call my mobile on <PHONE> after six.")
    found = scan([tmp_path], CANARIES, skip=[tmp_path / "raw"])
    assert found == {str(tmp_path / "store.db"): ["email"], str(tmp_path / "weights.bin"): ["api_key"],
                     str(tmp_path / "phone.log"): ["phone"]}


def test_a_canary_in_the_outputs_or_from_the_model_refuses_the_candidate(tmp_path, monkeypatch):
    from tasks.release.register import register
    from tests.release.conftest import GOOD, QUANTIZED

    monkeypatch.chdir(tmp_path)
    for name, content in {"model/config.json": "{}", "smoke_test.json": json.dumps({"smoke_answer": "Paris."}),
                          "quantize.json": json.dumps(QUANTIZED), "out/leak.jsonl": CANARIES[2].sentence}.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    (tmp_path / "metrics.json").write_text(json.dumps({**GOOD, "canaries": {"probed": 8, "exposed": 1}}))
    result = register(configured("gates"), "m", tmp_path / "model", tmp_path / "metrics.json", tmp_path / "quantize.json",
                      tmp_path / "smoke_test.json", tmp_path / "registration.json", tmp_path / "report.md",
                      tmp_path / "vs.png", canaries=CANARIES, scanned=[tmp_path / "out"])
    registration = json.loads((tmp_path / "registration.json").read_text())
    assert result["alias"] == "challenger"
    assert registration["why"] == ("failed gates: canary secrets in outputs, stores and logs, "
                                   "canaries the served model completed")
    assert f"Canary found in: {tmp_path / 'out' / 'leak.jsonl'}" in (tmp_path / "report.md").read_text()
