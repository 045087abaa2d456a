import json

from tasks.clean import clean
from tasks.config import CleanConfig
from tasks.jsonl import read_jsonl, write_jsonl
from tests.conftest import conversation


def test_clean_reconciles_audits_and_scrubs(tmp_path):
    long_reply = " ".join(f"word{i}" for i in range(200))
    rows = [
        conversation("How do I reach support?", "Email help@example.com or call +1 (415) 555-2671.", "pii"),
        conversation("Tell me a story", long_reply, "orig"),
        conversation("Tell me a story", long_reply.replace("word7 ", "wordX "), "near"),
        conversation("what is   DVC?", "A data version control tool.", "exact1"),
        conversation("What is DVC?", "A data version control tool.", "exact2"),
        conversation("hi", "", "empty"),
        {"id": "botfirst", "messages": [{"role": "assistant", "content": "Hello, I start the conversation."},
                                        {"role": "user", "content": "ok then"}]},
        conversation("x", "y", "short"),
    ]
    src = tmp_path / "in.jsonl"
    write_jsonl(src, rows)
    out, audit = tmp_path / "out.jsonl", tmp_path / "audit.jsonl"
    counts = clean(CleanConfig(), src, out, audit, tmp_path / "r.json", tmp_path / "r.md", tmp_path / "plots")

    assert counts["rows_in"] == len(rows) == counts["rows_kept"] + sum(counts["dropped_by_reason"].values())
    assert counts["dropped_by_reason"] == {"exact_duplicate": 1, "near_duplicate": 1, "empty_turn": 1,
                                           "first_turn_not_user": 1, "too_short": 1}
    kept = {r["id"]: r for r in read_jsonl(out)}
    assert set(kept) == {"pii", "orig", "exact1"}
    assert kept["pii"]["messages"][1]["content"] == "Email <EMAIL> or call <PHONE>."
    entries = list(read_jsonl(audit))
    dropped_ids = {e["id"] for e in entries if e["action"] == "dropped"}
    assert dropped_ids == {"near", "exact2", "empty", "botfirst", "short"}
    assert {"id": "pii", "action": "modified", "stage": "pii", "reason": "pii_scrubbed",
            "pii": {"email": 1, "phone": 1}} in entries
    assert "help@example.com" not in audit.read_text() + json.dumps(counts)
    assert (tmp_path / "plots" / "jaccard_candidates.png").stat().st_size > 0
    assert "rows in: **8**" in (tmp_path / "r.md").read_text()
