"""The issue's bad-input corpus through ingest and clean: every bad row is quarantined (ingest) or dropped (clean)
with its own reason, both stages' counts reconcile, the good rows come through unchanged, the quarantine keeps
every raw record exactly (invalid UTF-8 included), and ingest reads its input as a stream."""
from __future__ import annotations

import codecs
import json
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest

from tasks.common.jsonl import read_jsonl
from tasks.data.ingest import ingest
from tests.conftest import configured, conversation, reading

BIG = 10 * 2**20                     # the "10 MB single line"


class Row(NamedTuple):
    raw: bytes                       # the line as written, without its line ending
    id: str | None                   # id the quarantine entry carries; None where the line is not readable JSON
    ingest: str | None               # quarantine reason (whole, or the part before its colon); None: ingest keeps it
    clean: str | None = None         # clean's drop reason for a row ingest keeps; None: clean keeps it


def line(obj) -> bytes:
    return json.dumps(obj).encode()    # ASCII: non-ASCII text and lone surrogates become \uXXXX escapes


GOOD = {
    "g-bom": conversation("What is the capital of France?", "The capital of France is Paris.", "g-bom"),
    "g-sharegpt": {"id": "g-sharegpt", "conversations": [
        {"from": "human", "value": "Which planet is closest to the sun?"},
        {"from": "gpt", "value": "Mercury is the planet closest to the sun."}]},
    "g-unicode": {"id": "g-unicode", "messages": [
        {"role": "system", "content": "Réponds en français."},
        {"role": "user", "content": "Comment dit-on « bonjour » en japonais ?"},
        {"role": "assistant", "content": "On dit « こんにちは » (konnichiwa)."}]},
    "g-emoji": conversation("Send me a smiling face, please.", "Here it is: \U0001F600 (an escaped pair).", "g-emoji"),
    "g-last": conversation("How many legs does a spider have?", "A spider has eight legs.", "g-last"),
}
EXPECTED_MESSAGES = {
    **{cid: row.get("messages") for cid, row in GOOD.items()},
    "g-sharegpt": [{"role": "user", "content": "Which planet is closest to the sun?"},
                   {"role": "assistant", "content": "Mercury is the planet closest to the sun."}],
}
ROWS: list[Row] = [
    Row(codecs.BOM_UTF8 + line(GOOD["g-bom"]), "g-bom", None),
    Row(line(GOOD["g-sharegpt"]), "g-sharegpt", None),
    Row(b'{"id": "truncated", "messages": [{"role": "user", "content": "cut o', None, "invalid_json"),
    Row(line(conversation("Is this valid?", "Only up to here.", "trailing")) + b" }garbage", None, "invalid_json"),
    Row(line(["not", "an", "object"]), None, "not_an_object"),
    Row(line("a bare string"), None, "not_an_object"),
    Row(line({"id": "no-messages", "text": "What is DVC?"}), "no-messages", "missing_messages"),
    Row(line({"id": "messages-dict", "messages": {"role": "user", "content": "hi"}}), "messages-dict",
        "messages_not_a_list"),
    Row(line({"id": "no-turns", "messages": []}), "no-turns", "empty_conversation"),
    Row(line({"id": "turn-text", "messages": ["What is DVC?"]}), "turn-text", "bad_turn: turn_not_an_object"),
    Row(line({"id": "no-content", "messages": [{"role": "user"}]}), "no-content", "bad_turn: missing_content"),
    Row(line({"id": "content-number", "messages": [{"role": "user", "content": 42}]}), "content-number",
        "bad_turn: content_not_a_string"),
    Row(line({"id": "robot", "messages": [{"role": "robot", "content": "beep"}]}), "robot", "unknown_role"),
    Row(line(conversation("", "There is nothing to answer here.", "empty-text")), "empty-text", None, "empty_turn"),
    Row(b"", None, "blank_line"),     # no record, but a line: counted, so rows_in is the file's line count
    Row(line(conversation(" \t \n ", "Only whitespace was asked.", "space-text")), "space-text", None, "empty_turn"),
    Row(b'{"id": "latin-1", "messages": [{"role": "user", "content": "caf\xe9 cr\xe8me br\xfbl\xe9e"}]}', None,
        "invalid_utf8"),
    Row(b'{"id": "cesu", "messages": [{"role": "user", "content": "\xed\xa0\xbd\xed\xb8\x80"}]}', None,
        "invalid_utf8"),
    Row(b'{"id": "nul-literal", "messages": [{"role": "user", "content": "a\x00b"}]}', None, "nul_byte"),
    Row(line(conversation("What does a\x00b mean?", "It holds a NUL character.", "nul-escaped")), "nul-escaped",
        "nul_byte"),
    Row(line(conversation("A broken emoji \ud83d here?", "Half a surrogate pair.", "lone-surrogate")),
        "lone-surrogate", "lone_surrogate"),
    Row(line(conversation("Is my id fine?", "It holds half a surrogate pair.", "id-\udc00")), "id-\udc00",
        "lone_surrogate"),
    Row(b'{"id": ' + b"9" * 5000 + b', "messages": []}', None, "invalid_json"),      # int too long to convert
    Row(b'{"id": "deep", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None, "invalid_json"),
    Row(line(conversation("Summarise this: " + "lorem ipsum dolor sit amet " * (BIG // 27), "It repeats.", "huge")),
        "huge", None, "too_long"),
    Row(b'{"id": "huge-broken", "messages": [{"role": "user", "content": "' + b"x" * BIG, None, "invalid_json"),
    Row(line(conversation("A different question?", "A different answer.", "g-sharegpt")), "g-sharegpt",
        "duplicate_id"),
    Row(line(GOOD["g-unicode"]), "g-unicode", None),
    Row(line(GOOD["g-emoji"]), "g-emoji", None),
    Row(line(GOOD["g-last"]), "g-last", None),
]


def write_bad_corpus(path: Path) -> dict[int, Row]:
    """The corpus with CRLF line endings and no ending on the last line; its rows by 1-based line number."""
    path.write_bytes(b"\r\n".join(row.raw for row in ROWS))
    return dict(enumerate(ROWS, 1))


def head(reason: str) -> str:
    return reason.split(":")[0]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> tuple[dict[int, Row], Path, int]:
    """(rows by line, run folder, peak traced memory): one ingest of the bad corpus, shared by both stages' tests."""
    d = tmp_path_factory.mktemp("bad")
    rows = write_bad_corpus(d / "raw.jsonl")
    tracemalloc.start()
    ingest(reading(d / "raw.jsonl"), d / "ingested.jsonl", d / "quarantine.jsonl", d / "report.json")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return rows, d, peak


def test_ingest_quarantines_each_bad_row_with_its_reason_line_id_and_raw_record(ingested):
    rows, d, peak = ingested
    counts = json.loads((d / "report.json").read_text())

    bad = {number: row for number, row in rows.items() if row.ingest}
    assert counts["rows_in"] == len(rows) == counts["rows_kept"] + counts["rows_quarantined"]
    assert counts["quarantined_by_reason"] == Counter(head(row.ingest) for row in bad.values())
    entries = {entry["line"]: entry for entry in read_jsonl(d / "quarantine.jsonl")}
    assert entries.keys() == bad.keys()
    for number, row in bad.items():
        entry = entries[number]
        assert entry["reason"] == row.ingest or head(entry["reason"]) == row.ingest, number
        assert entry["id"] == row.id, number
        if "record" in entry:       # parsed: the JSON value itself
            assert entry["record"] == json.loads(row.raw), number
        else:                       # unparsed: the text, with bytes that are not UTF-8 as lone surrogates
            assert entry["raw"].encode("utf-8", "surrogateescape") == row.raw, number
    assert (d / "quarantine.jsonl").read_bytes().isascii()
    let_through = [row.id for row in rows.values() if not row.ingest]
    assert [row["id"] for row in read_jsonl(d / "ingested.jsonl")] == let_through
    # a few copies of the longest line at once (its bytes, text, parsed value, output line), never the whole file
    assert peak < 8 * BIG, f"ingest peak {peak / 2**20:.0f} MiB: more than a few copies of the longest line"


def test_clean_drops_what_ingest_let_through_with_its_reason_and_keeps_the_good_rows(ingested):
    from tasks.data.clean import clean  # imported here: the ingest tests must not depend on clean importing

    rows, d, _ = ingested
    counts = clean(configured("clean"), d / "ingested.jsonl", d / "clean.jsonl", d / "audit.jsonl", d / "c.json",
                   d / "c.md", d / "plots", held_out_fraction=configured("datasets").test_fraction)

    survivors = [row for row in rows.values() if not row.ingest]
    assert counts["rows_in"] == len(survivors) == counts["rows_kept"] + counts["rows_dropped"]
    assert counts["rows_dropped"] == sum(counts["dropped_by_reason"].values())
    assert counts["dropped_by_reason"] == Counter(row.clean for row in survivors if row.clean)
    kept = {row["id"]: row["messages"] for row in read_jsonl(d / "clean.jsonl")}
    assert kept == EXPECTED_MESSAGES


@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_ingest_streams_its_input(tmp_path, suffix):
    """Peak memory follows the longest record, not the file: 32 MiB of 8 KiB conversations in a few MiB."""
    src, n = tmp_path / f"raw{suffix}", 4096
    with open(src, "w") as f:
        f.write("[\n" if suffix == ".json" else "")
        for i in range(n):
            sep = ",\n" if suffix == ".json" and i < n - 1 else "\n"
            f.write(json.dumps(conversation(f"Question {i}?", f"Answer {i}: " + "blah " * 1600, f"r{i}")) + sep)
        f.write("]\n" if suffix == ".json" else "")

    tracemalloc.start()
    counts = ingest(reading(src), tmp_path / "ok.jsonl", tmp_path / "bad.jsonl", tmp_path / "r.json")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert counts["rows_kept"] == n
    assert peak < src.stat().st_size / 4, f"ingest peak {peak / 2**20:.1f} MiB for a {src.stat().st_size} B file"
