import json

import pytest

from tasks.common.jsonl import byte_ranges, read_jsonl, read_jsonl_range, write_jsonl
from tasks.data.clean import clean
from tasks.data.split import in_test_split
from tests.conftest import configured, conversation

INLINE = {"executor": {"kind": "local", "workers": 1}}


def run_clean(tmp_path, rows_or_src, **cfg) -> tuple[dict, dict, list[dict]]:
    src = rows_or_src
    if isinstance(rows_or_src, list):
        src = tmp_path / "in.jsonl"
        write_jsonl(src, rows_or_src)
    out, audit = tmp_path / "out.jsonl", tmp_path / "audit.jsonl"
    counts = clean(configured("clean", **{**INLINE, **cfg}), src, out, audit, tmp_path / "r.json",
                   tmp_path / "r.md", tmp_path / "plots", held_out_fraction=configured("datasets").test_fraction)
    return counts, {r["id"]: r for r in read_jsonl(out)}, list(read_jsonl(audit))


def ids_by_split(want_test: bool, n: int, prefix: str) -> list[str]:
    ids = (f"{prefix}{i}" for i in range(10_000))
    return [i for i in ids if in_test_split(i, 0.05) == want_test][:n]


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
        {"id": "midanswer", "messages": [{"role": "assistant", "content": "...and that is the end of my answer."},
                                         *conversation("Thanks! One more: what is MLflow?",
                                                       "An experiment tracker and model registry.", "")["messages"]]},
        {"id": "botonly", "messages": [{"role": "assistant", "content": "Nobody asked, but here is a reply."}]},
        conversation("x", "y", "short"),
    ]
    counts, kept, entries = run_clean(tmp_path, rows)

    assert counts["rows_in"] == len(rows) == counts["rows_kept"] + sum(counts["dropped_by_reason"].values())
    assert counts["dropped_by_reason"] == {"exact_duplicate": 1, "near_duplicate": 1, "empty_turn": 1,
                                           "no_assistant_reply": 1, "first_turn_not_user": 1, "too_short": 1}
    assert set(kept) == {"pii", "orig", "exact1", "midanswer"}
    assert [m["role"] for m in kept["midanswer"]["messages"]] == ["user", "assistant"]
    assert counts["rows_leading_replies_trimmed"] == 3
    assert kept["pii"]["messages"][1]["content"] == "Email <EMAIL> or call <PHONE>."
    dropped_ids = {e["id"] for e in entries if e["action"] == "dropped"}
    assert dropped_ids == {"near", "exact2", "empty", "botfirst", "botonly", "short"}
    assert {"id": "midanswer", "action": "modified", "stage": "quality", "reason": "leading_replies_trimmed",
            "turns": 1} in entries
    assert {"id": "pii", "action": "modified", "stage": "pii", "reason": "pii_scrubbed",
            "pii": {"email": 1, "phone": 1}} in entries
    assert "help@example.com" not in (tmp_path / "audit.jsonl").read_text() + json.dumps(counts)
    for plot in ("jaccard_candidates", "cluster_sizes", "pii_by_type", "dropped_by_reason"):
        assert (tmp_path / "plots" / f"{plot}.png").stat().st_size > 0
    assert f"rows in: **{len(rows)}**" in (tmp_path / "r.md").read_text()


def test_keep_policy_picks_the_cluster_survivor(tmp_path):
    reply = " ".join(f"token{i}" for i in range(150))
    rows = [conversation("Summarise this", reply, "first"),
            conversation("Summarise this", reply + " and a longer ending here", "longer")]
    _, kept_longest, _ = run_clean(tmp_path, rows)
    _, kept_first, _ = run_clean(tmp_path, rows, near_dedup={"keep": "first"})
    assert set(kept_longest) == {"longer"} and set(kept_first) == {"first"}


def test_training_rows_containing_a_held_out_example_are_dropped(tmp_path):
    [test_id], [leaky_id, clean_id] = ids_by_split(True, 1, "t"), ids_by_split(False, 2, "r")
    held_out = "Explain how a heat pump moves heat from the cold outside air into a warm house in winter time."
    answer = "It runs a refrigeration cycle backwards: the refrigerant evaporates outside and condenses inside."
    rows = [conversation(held_out, answer, test_id),
            conversation("Here is a question from my homework. " + held_out + " Please answer it carefully.",
                         "Sure. " + answer + " That is the whole trick, and compressors make it work.", leaky_id),
            conversation("What is a bicycle derailleur for?", "It moves the chain between sprockets.", clean_id)]
    counts, kept, entries = run_clean(tmp_path, rows)
    assert set(kept) == {test_id, clean_id}
    assert counts["dropped_by_reason"] == {"contaminated": 1}
    [entry] = [e for e in entries if e["action"] == "dropped"]
    assert entry["id"] == leaky_id and entry["stage"] == "decontamination" and entry["containment"] >= 0.5

    _, kept, _ = run_clean(tmp_path, rows, decontamination={"held_out": False})
    assert set(kept) == {test_id, leaky_id, clean_id}


def test_byte_ranges_read_every_line_once(tmp_path):
    rows = [{"id": str(i), "text": "x" * (i * 37 % 500)} for i in range(300)]
    path = tmp_path / "rows.jsonl"
    write_jsonl(path, rows)
    for chunk in (1, 64, 1000, 10**6):       # smaller than a line, around a line, many lines, the whole file
        got = [r for start, end in byte_ranges(path, chunk) for r in read_jsonl_range(path, start, end)]
        assert got == rows, chunk


@pytest.mark.parametrize("executor", [{"kind": "local", "workers": 2}, {"kind": "dask", "workers": 2}],
                         ids=["local-processes", "dask-local-cluster"])
def test_multi_process_and_dask_runs_match_the_inline_run(tmp_path, sharegpt_sample, executor):
    """The same cleaning code on 2 worker processes and on a 2-worker Dask cluster (127.0.0.1), in 0.5 MB chunks,
    gives byte-for-byte the output and the audit of the in-process run."""
    small_chunks = {"chunk_mb": 0.5}
    inline = run_clean(tmp_path / "inline", sharegpt_sample, executor={**INLINE["executor"], **small_chunks})
    other = run_clean(tmp_path / "other", sharegpt_sample, executor={**executor, **small_chunks})
    counts = inline[0]
    assert counts["chunks"] > 4 and counts["rows_in"] == counts["rows_kept"] + counts["rows_dropped"]
    assert counts["dropped_by_reason"]["exact_duplicate"] > 0 and counts["pii_by_type"]
    assert other[0]["executor"] == f"{executor['kind']} x2"
    costs = ("executor", "seconds", "cpu_seconds", "processes")
    assert {k: v for k, v in other[0].items() if k not in costs} == {k: v for k, v in counts.items() if k not in costs}
    assert (tmp_path / "other/out.jsonl").read_bytes() == (tmp_path / "inline/out.jsonl").read_bytes()
    assert other[2] == inline[2]             # the audit too, line for line
    assert len([name for name in other[0]["processes"] if name.startswith("worker")]) == 2
    assert list(inline[0]["processes"]) == ["driver"]      # inline: the tasks ran in the driver


def test_an_empty_corpus_gives_an_empty_reconciled_report(tmp_path):
    counts, kept, entries = run_clean(tmp_path, [])
    assert (counts["rows_in"], counts["rows_kept"], counts["rows_dropped"], kept, entries) == (0, 0, 0, {}, [])
