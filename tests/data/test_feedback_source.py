"""A closed feedback round as an ingest source beside the real corpus, through ingest, clean and datasets: corrected
and liked replies become SFT rows at the source's weight, the pairs users made lead the preference prompts, a
duplicate of a corpus conversation is dropped by clean like any, no PII survives, and adding the source moves no
corpus row between train and test."""
import itertools
import json
from collections import Counter

import pytest

from tasks.common.jsonl import read_jsonl
from tasks.config import load_config
from tasks.data.clean import clean
from tasks.data.feedback import cut
from tasks.data.ingest import EMBEDDED, ingest, raw_records
from tasks.data.split import in_test_split
from tasks.serve.recorder import Recorder
from tests.conftest import ROOT, configured
from tests.data.test_mix import exchanges
from tests.serve.test_feedback import EMAIL, answer

ROWS = 400
CORPUS = {"path": EMBEDDED, "name": "sharegpt", "max_rows": ROWS}


@pytest.fixture(scope="module")
def round_one(tmp_path_factory):
    """Users' questions (ShareGPT's, past the corpus source's rows): 30 answers corrected (each a pair: the correction
    over the reply), 6 liked, one of them with a disliked answer to the same prompt (a pair), a disliked one alone
    (nothing), and a conversation the corpus holds, sent back verbatim and liked."""
    d = tmp_path_factory.mktemp("flywheel")
    cfg = load_config(ROOT / "params.yaml")
    recorder = Recorder(cfg.flywheel, cfg.clean.pii, d / "live")
    records = list(itertools.islice(raw_records(EMBEDDED, offline=True), 3 * ROWS))
    corpus = next(m for _, m in exchanges(records[:ROWS]) if len(m) == 2)   # a conversation the corpus also has
    asked = [m[:2] for _, m in exchanges(records[ROWS:]) if 40 < len(m[1]["content"]) < 600][:40]   # users' own
    asked[0] = [{"role": "user", "content": asked[0][0]["content"] + f" Write to me at {EMAIL}."}, asked[0][1]]
    for i, (prompt, reply) in enumerate(asked):
        recorder.exchange({"messages": [prompt]}, answer(f"c{i}", "Sorry, I cannot help with that today."), 1, 0.1)
    recorder.exchange({"messages": asked[30][:1]}, answer("c30-bad", "No idea, try somewhere else."), 1, 0.1)
    recorder.exchange({"messages": corpus[:1]}, answer("echo", corpus[1]["content"]), 1, 0.1)
    for i in range(30):
        recorder.feedback(f"c{i}", None, f"Great question! {asked[i][1]['content']}")
    for i in range(30, 36):
        recorder.feedback(f"c{i}", 1, None)
    recorder.feedback("c30-bad", -1, None)
    recorder.feedback("c36", -1, None)
    recorder.feedback("echo", 1, None)
    recorder.close()
    rounds = cut(1, live=d / "live", rounds=d / "rounds").parent
    sources = [{**CORPUS, "weight": 0.5}, {"path": str(rounds), "kind": "feedback", "weight": 0.5}]
    counts = ingest(configured("ingest", sources=sources), d / "conv.jsonl", d / "quarantine.jsonl", d / "i.json")
    cleaned = clean(configured("clean", executor={"kind": "local", "workers": 1}), d / "conv.jsonl", d / "clean.jsonl",
                    d / "audit.jsonl", d / "c.json", d / "c.md", d / "plots", held_out_fraction=0.2)
    return d, counts, cleaned


def test_the_round_is_ingested_and_cleaned_like_any_source(round_one):
    d, counts, cleaned = round_one
    fed = counts["by_source"]["rounds"]
    assert fed["feedback"] == {"corrected": 30, "liked": 7, "disliked": 2, "pairs": 31}
    assert fed["rows_kept"] == 37 and fed["rows_in"] == fed["rows_kept"] + fed["rows_quarantined"]
    by_source = cleaned["by_source"]["rounds"]
    assert by_source["dropped_by_reason"].get("exact_duplicate", 0) + \
        by_source["dropped_by_reason"].get("near_duplicate", 0) >= 1   # the corpus answer sent back
    rows = {r["id"]: r for r in read_jsonl(d / "clean.jsonl") if r["source"] == "rounds"}
    assert rows["rounds/c3"]["rejected"] == "Sorry, I cannot help with that today."   # what the correction replaced
    assert rows["rounds/c3"]["messages"][-1]["content"].startswith("Great question! ")
    assert rows["rounds/c30"]["rejected"].startswith("No idea")        # liked over the disliked reply to its prompt
    assert "rejected" not in rows["rounds/c33"]                        # liked, nothing worse said
    assert EMAIL not in (d / "clean.jsonl").read_text() and EMAIL not in (d / "conv.jsonl").read_text()


def test_adding_the_source_moves_no_corpus_row_between_train_and_test(round_one, tmp_path):
    d, _, _ = round_one
    alone = ingest(configured("ingest", sources=[CORPUS]), tmp_path / "conv.jsonl", tmp_path / "q.jsonl",
                   tmp_path / "i.json")
    assert alone["rows_kept"] == ROWS - alone["rows_quarantined"]
    ids = [r["id"] for r in read_jsonl(tmp_path / "conv.jsonl")]
    assert Counter(in_test_split(i, 0.2) for i in ids) == Counter(in_test_split(f"sharegpt/{i}", 0.2) for i in ids)
    assert all(in_test_split(i, 0.2) == in_test_split(f"sharegpt/{i}", 0.2) for i in ids)


def test_feedback_pairs_lead_the_preference_prompts(round_one, base_model_dir, tmp_path):
    from tasks.train.datasets import build_datasets

    d, _, _ = round_one
    cfg = configured("datasets", test_fraction=0.2, sft_train_size=40, sft_test_size=8, pref_train_size=8,
                     pref_test_size=4)
    metrics = build_datasets(cfg, 42, base_model_dir, d / "clean.jsonl", tmp_path, weights={"sharegpt": 0.5,
                                                                                           "rounds": 0.5})
    assert metrics["by_source"]["rounds"]["sft_train"] == 20
    prompts = list(read_jsonl(tmp_path / "pref_prompts_train.jsonl"))
    assert all(p["id"].startswith("rounds/") and p["rejected"][0]["content"] for p in prompts)
    assert json.dumps(prompts).count("Great question!") >= 7
