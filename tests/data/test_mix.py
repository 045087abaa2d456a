"""Two sources mixed on purpose, through ingest, clean and datasets on real data: an Alpaca file made of ShareGPT
conversations (some of them also in the other source) and the embedded ShareGPT capped by max_rows, at weights
0.7/0.3. The SFT train set lands at the weights, every count reconciles per source at every step, ids are unique,
and the conversations in both sources are kept once."""
from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest

from tasks.common.jsonl import read_jsonl
from tasks.config import SourceConfig, changed
from tasks.data.clean import clean
from tasks.data.ingest import EMBEDDED, Malformed, SourceError, ingest, normalise, raw_records
from tasks.data.ingest_read import hub_name
from tasks.train.datasets import build_datasets, mix_weights
from tests.conftest import configured

SHAREGPT_ROWS = 400            # the embedded source's max_rows: the Alpaca file is made of the records after these
ALPACA_FROM = range(SHAREGPT_ROWS, 1000)
SHARED = 6                     # conversations of the embedded source's first rows put in the Alpaca file as well
WEIGHTS = {"alpaca": 0.7, "sharegpt": 0.3}
SMALL = {"test_fraction": 0.2, "sft_test_size": 8, "pref_train_size": 8, "pref_test_size": 8}


def exchanges(records) -> list[tuple[str, list[dict]]]:
    """(id, messages) of the records that open with a user/assistant exchange."""
    found = []
    for _, record, reason in records:
        try:
            messages = normalise(record)[1] if reason is None else []
        except Malformed:
            messages = []
        if len(messages) >= 2 and [m["role"] for m in messages[:2]] == ["user", "assistant"] and all(
                m["content"].strip() for m in messages[:2]):
            found.append((record["id"], messages))
    return found


def alpaca(rid: str, messages: list[dict]) -> dict:
    """The Alpaca row of a conversation's first exchange; a user turn of several lines is instruction and input."""
    instruction, _, extra = messages[0]["content"].partition("\n")
    return {"id": rid, "instruction": instruction, "input": extra, "output": messages[1]["content"]}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The two sources ingested and cleaned: (folder, ingest counts, clean counts, ids of the shared pairs)."""
    d = tmp_path_factory.mktemp("mix")
    records = list(itertools.islice(raw_records(EMBEDDED, offline=True), ALPACA_FROM.stop))
    shared = [(rid, m) for rid, m in exchanges(records[:SHAREGPT_ROWS]) if len(m) == 2][:SHARED]
    rows = [alpaca(f"a{rid}", m) for rid, m in exchanges(records[ALPACA_FROM.start:])]
    rows += [alpaca(f"shared-{rid}", m) for rid, m in shared]
    rows.append({"id": "no-output", "instruction": "Say hi.", "output": ""})
    (d / "alpaca.jsonl").write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    sources = [{"path": str(d / "alpaca.jsonl"), "weight": WEIGHTS["alpaca"], "tags": ["own", "alpaca"]},
               {"path": EMBEDDED, "name": "sharegpt", "weight": WEIGHTS["sharegpt"], "max_rows": SHAREGPT_ROWS}]
    ingested = ingest(configured("ingest", sources=sources), d / "conv.jsonl", d / "quarantine.jsonl", d / "i.json")
    cleaned = clean(configured("clean", executor={"kind": "local", "workers": 1}), d / "conv.jsonl", d / "clean.jsonl",
                    d / "audit.jsonl", d / "c.json", d / "c.md", d / "plots", held_out_fraction=SMALL["test_fraction"])
    pairs = {f"alpaca/shared-{rid}": f"sharegpt/{rid}" for rid, _ in shared}
    return d, ingested, cleaned, pairs


def reconciles(by_source: dict, totals: dict, out: str, keys: tuple[str, ...]) -> None:
    """Each source's rows_in is its rows out plus its `keys`' rows; each count summed over the sources is the total."""
    for name, counts in by_source.items():
        assert counts["rows_in"] == counts[out] + sum(counts[k] for k in keys), name
    for key in ("rows_in", out, *keys):
        assert sum(counts[key] for counts in by_source.values()) == totals[key], key


def test_ingest_counts_each_source_and_prefixes_ids_with_its_name(mixed):
    d, counts, _, _ = mixed
    by_source = counts["by_source"]
    reconciles(by_source, counts, "rows_kept", ("rows_quarantined",))
    assert by_source["sharegpt"]["rows_in"] == SHAREGPT_ROWS and by_source["alpaca"]["tags"] == ["own", "alpaca"]
    assert by_source["alpaca"]["quarantined_by_reason"] == {"bad_alpaca": 1}
    assert [entry["source"] for entry in read_jsonl(d / "quarantine.jsonl")].count("alpaca") == 1
    rows = list(read_jsonl(d / "conv.jsonl"))
    assert len({row["id"] for row in rows}) == len(rows) == counts["rows_kept"]
    assert Counter(row["source"] for row in rows) == {name: c["rows_kept"] for name, c in by_source.items()}
    assert all(row["id"].startswith(f"{row['source']}/") for row in rows)


def test_clean_counts_reconcile_per_source_and_drops_a_conversation_in_both_sources_once(mixed):
    d, ingested, counts, pairs = mixed
    by_source = counts["by_source"]
    reconciles(by_source, counts, "rows_kept", ("rows_dropped",))
    assert {name: c["rows_in"] for name, c in by_source.items()} == {
        name: c["rows_kept"] for name, c in ingested["by_source"].items()}
    kept = Counter(row["source"] for row in read_jsonl(d / "clean.jsonl"))
    assert kept == {name: c["rows_kept"] for name, c in by_source.items()}
    dropped = {entry["id"]: entry for entry in read_jsonl(d / "audit.jsonl") if entry["action"] == "dropped"}
    kept_ids = {row["id"] for row in read_jsonl(d / "clean.jsonl")}
    deduped = [first for first, second in pairs.items() if first in kept_ids]
    assert len(deduped) >= SHARED // 2         # the others' both copies fall to the same filter
    for first in deduped:                      # the Alpaca file is read first: its copy is the one kept
        entry = dropped[pairs[first]]
        assert (entry["reason"], entry["duplicate_of"]) == ("exact_duplicate", first)
    assert by_source["sharegpt"]["dropped_by_reason"]["exact_duplicate"] >= len(deduped)
    assert "| source | rows in | kept | dropped | dropped because |" in (d / "c.md").read_text()


def written_by_source(folder) -> dict[str, Counter]:
    return {path.stem: Counter(row["id"].split("/")[0] for row in read_jsonl(path))
            for path in sorted(folder.glob("*.jsonl"))}


def test_the_sft_train_set_takes_each_source_at_its_weight(mixed, base_model_dir, tmp_path):
    d = mixed[0]
    cfg = configured("datasets", **SMALL, sft_train_size=100)
    metrics = build_datasets(cfg, 42, base_model_dir, d / "clean.jsonl", tmp_path, weights=WEIGHTS)

    train = Counter(row["id"].split("/")[0] for row in read_jsonl(tmp_path / "sft_train.jsonl"))
    assert metrics["sft_train"] == train.total() == 100
    for name, weight in WEIGHTS.items():
        assert abs(train[name] / train.total() - weight) <= 0.02
    files = written_by_source(tmp_path)
    assert metrics["by_source"] == {name: {stem: files[stem][name] for stem in files} for name in WEIGHTS}
    for stem in files:
        assert sum(counts[stem] for counts in metrics["by_source"].values()) == metrics[stem]


def test_size_0_is_the_largest_mix_and_a_source_short_of_its_share_is_named(mixed, base_model_dir, tmp_path):
    d = mixed[0]
    cfg = configured("datasets", **SMALL, sft_train_size=0)
    metrics = build_datasets(cfg, 42, base_model_dir, d / "clean.jsonl", tmp_path, weights=WEIGHTS)
    train, size = metrics["by_source"], metrics["sft_train"]
    assert abs(train["alpaca"]["sft_train"] / size - WEIGHTS["alpaca"]) <= 0.02

    unmixed = build_datasets(cfg, 42, base_model_dir, d / "clean.jsonl", tmp_path / "all")  # every one that fits
    available = {name: counts["sft_train"] for name, counts in unmixed["by_source"].items()}
    scarce = min(WEIGHTS, key=lambda n: available[n] / WEIGHTS[n])
    assert train[scarce]["sft_train"] >= available[scarce] - 1          # the scarcest source is used up

    with pytest.raises(ValueError, match=rf"datasets.sft_train_size=5000: source '{scarce}' has {available[scarce]} "
                                         rf"training conversations that fit datasets.max_tokens=\d+, short of its "
                                         rf"share .*; the mix allows at most {size} "):
        build_datasets(changed(cfg, sft_train_size=5000), 42, base_model_dir, d / "clean.jsonl", tmp_path / "short",
                       weights=WEIGHTS)


def test_weights_mix_only_more_than_one_source():
    one, two = [SourceConfig(path="a.jsonl", weight=2)], [SourceConfig(path="a.jsonl", weight=2),
                                                          SourceConfig(path="b.jsonl", weight=1)]
    assert mix_weights(one) is None and mix_weights(two) == {"a": 2, "b": 1}
    assert mix_weights([SourceConfig(path="a.jsonl"), SourceConfig(path="b.jsonl")]) is None


def test_system_prompts_go_to_conversations_without_one_a_sources_own_first(tmp_path):
    rows = [{"id": "plain", "question": "What is DVC?", "answer": "A data version control tool."},
            {"id": "own", "system": "你是一个简洁的助手。", "question": "什么是微调？",
             "answer": "在预训练模型上继续训练。"}]
    for name in ("a", "b"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    sources = [{"path": str(tmp_path / "a.jsonl")}, {"path": str(tmp_path / "b.jsonl"), "system_prompt": "Be brief."}]
    ingest(configured("ingest", sources=sources, system_prompt="Be kind."), tmp_path / "ok.jsonl",
           tmp_path / "bad.jsonl", tmp_path / "r.json")
    systems = {row["id"]: row["messages"][0]["content"] for row in read_jsonl(tmp_path / "ok.jsonl")}
    assert systems == {"a/plain": "Be kind.", "a/own": "你是一个简洁的助手。", "b/plain": "Be brief.",
                       "b/own": "你是一个简洁的助手。"}


def test_a_hub_dataset_is_refused_offline_in_one_line_before_anything_is_written(tmp_path):
    assert hub_name("tatsu-lab/alpaca") and not hub_name("raw/mine.jsonl") and not hub_name(EMBEDDED)
    (tmp_path / "mine.jsonl").write_text(json.dumps({"question": "Why?", "answer": "Because."}) + "\n")
    sources = [{"path": str(tmp_path / "mine.jsonl")}, {"path": "tatsu-lab/alpaca"}]
    with pytest.raises(SourceError, match="^ingest source 'tatsu-lab/alpaca' is no file or folder here, so a Hugging "
                                          "Face hub dataset, and runtime.offline is true: set it false") as err:
        ingest(configured("ingest", sources=sources), tmp_path / "ok.jsonl", tmp_path / "bad.jsonl",
               tmp_path / "r.json", offline=True)
    assert "\n" not in str(err.value) and not (tmp_path / "ok.jsonl").exists()
