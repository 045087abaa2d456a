import json

from tasks.common.jsonl import read_jsonl
from tasks.config import IngestConfig
from tasks.data.ingest import ingest


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

    counts = ingest(IngestConfig(source=str(src)), out, bad, report)

    assert counts["rows_in"] == 11 == counts["rows_kept"] + counts["rows_quarantined"]
    assert counts["rows_kept"] == 2
    reasons = [r["reason"].split(":")[0] for r in read_jsonl(bad)]
    assert sorted(reasons) == sorted(["invalid_json", "not_an_object", "missing_messages", "empty_conversation",
                                      "unknown_role", "bad_turn", "nul_byte", "invalid_utf8", "duplicate_id"])
    kept = list(read_jsonl(out))
    assert kept[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def test_embedded_sharegpt_reads_record_by_record(tmp_path):
    counts = ingest(IngestConfig(max_records=300), tmp_path / "ok.jsonl", tmp_path / "bad.jsonl", tmp_path / "r.json")
    assert counts["rows_in"] == 300 == counts["rows_kept"] + counts["rows_quarantined"]
    assert counts["rows_kept"] > 250
