import json

import pytest

from tasks.common.jsonl import read_jsonl
from tasks.data.ingest import ingest
from tests.conftest import configured, reading


def test_malformed_input_is_quarantined_with_reasons_and_counts_reconcile(tmp_path):
    src = tmp_path / "raw.jsonl"
    good_sharegpt = {"id": "a", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    good_messages = {"id": "b", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}
    lines = [json.dumps(good_sharegpt).encode(), json.dumps(good_messages).encode(),
             b'{"id": "c", "messages": [',                                          # broken JSON
             json.dumps([1, 2]).encode(),                                           # not an object
             json.dumps({"id": "d", "text": "no messages"}).encode(),               # wrong schema
             json.dumps({"id": "e", "messages": []}).encode(),                      # empty
             json.dumps({"id": "f", "messages": [{"role": "robot", "content": "x"}]}).encode(),
             json.dumps({"id": "g", "messages": [{"role": "user", "content": 3}]}).encode(),
             json.dumps({"id": "h", "messages": [{"role": "user", "content": "a\x00b"}]}).encode(),
             b'{"id": "i", "messages": "\xff\xfe"}',                                # invalid UTF-8
             json.dumps(good_messages).encode()]                                    # duplicate id
    src.write_bytes(b"\n".join(lines) + b"\n\n")
    out, bad, report = tmp_path / "ok.jsonl", tmp_path / "bad.jsonl", tmp_path / "report.json"

    counts = ingest(reading(src), out, bad, report)

    assert counts["rows_in"] == 12 == counts["rows_kept"] + counts["rows_quarantined"]
    assert counts["rows_in"] == src.read_bytes().count(b"\n")        # what `wc -l` says: the blank line counts
    assert counts["rows_kept"] == 2
    reasons = [r["reason"].split(":")[0] for r in read_jsonl(bad)]
    assert sorted(reasons) == sorted(["invalid_json", "not_an_object", "missing_messages", "empty_conversation",
                                      "unknown_role", "bad_turn", "nul_byte", "invalid_utf8", "duplicate_id",
                                      "blank_line"])
    kept = list(read_jsonl(out))
    assert kept[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_embedded_sharegpt_reads_record_by_record(tmp_path):
    counts = ingest(configured("ingest", max_records=300), tmp_path / "ok.jsonl", tmp_path / "bad.jsonl", tmp_path / "r.json")
    assert counts["rows_in"] == 300 == counts["rows_kept"] + counts["rows_quarantined"]
    assert counts["rows_kept"] > 250


def test_a_syntax_error_inside_a_json_array_quarantines_that_record_alone(tmp_path):
    records = [json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": f"q{i} {{not}} [json]"},
                                                       {"role": "assistant", "content": f"a{i}"}]}, indent=1)
               for i in range(20)]
    records[4] = records[4].replace('"id": "r4",', '"id": "r4"')                  # a missing comma
    records[11] = records[11].replace('"a11"', '"a11" "stray"')                    # a stray value, braces intact
    src = tmp_path / "raw.json"
    src.write_text("[\n" + ",\n".join(records) + "\n]\n")

    counts = ingest(reading(src), tmp_path / "ok.jsonl", tmp_path / "bad.jsonl", tmp_path / "r.json")

    assert counts["rows_in"] == 20 and counts["rows_kept"] == 18
    assert counts["quarantined_by_reason"] == {"invalid_json": 2}
    bad = list(read_jsonl(tmp_path / "bad.jsonl"))
    assert [entry["raw"] for entry in bad] == [records[4], records[11]]       # each one record, byte for byte
    assert [row["id"] for row in read_jsonl(tmp_path / "ok.jsonl")] == [f"r{i}" for i in range(20) if i not in (4, 11)]


def test_a_truncated_parquet_file_is_an_error_naming_it_and_writes_nothing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "raw.parquet"
    rows = [{"id": f"r{i}", "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(100)]
    pq.write_table(pa.Table.from_pylist(rows), src)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    out = tmp_path / "ok.jsonl"

    with pytest.raises(ValueError, match=f"{src} is not a readable Parquet file .*truncated or not Parquet"):
        ingest(reading(src), out, tmp_path / "bad.jsonl", tmp_path / "r.json")
    assert not out.exists() and not (tmp_path / "r.json").exists()
