"""Preference pairs from the SFT model on one token budget: reproducible, length-controlled, or the user's own."""
import json

import pytest

from tasks.common.jsonl import read_jsonl, write_jsonl
from tasks.common.modeling import load_tokenizer
from tasks.train.pairs import build_pairs, cut_to_budget
from tests.conftest import configured

pytestmark = pytest.mark.slow

LONG = ("Paris is the capital and the largest city of France, on the Seine, with a population of about two million "
        "people in the city itself and over twelve million in its metropolitan area. ") * 3


@pytest.fixture(scope="module")
def prompts(tiny_sets, tmp_path_factory):
    d = tmp_path_factory.mktemp("prompts")
    pairs = [{k: p[k] for k in ("id", "prompt", "chosen")} for p in read_jsonl(tiny_sets["pref"])]
    pairs[0]["chosen"] = [{"role": "assistant", "content": LONG}]
    write_jsonl(d / "train.jsonl", pairs[:6])
    write_jsonl(d / "test.jsonl", pairs[6:])
    return d


def pairs_of(cfg, seed, base_model_dir, adapter, prompts, out):
    metrics = build_pairs(cfg, seed, 0.2, base_model_dir, adapter, prompts / "train.jsonl", prompts / "test.jsonl",
                          out)
    return metrics, list(read_jsonl(out / "pref_train.jsonl")) + list(read_jsonl(out / "pref_test.jsonl"))


def test_cut_to_budget_keeps_whole_words_within_the_budget(base_model_dir):
    tokenizer = load_tokenizer(base_model_dir)
    text, n = cut_to_budget(LONG, tokenizer, 24)
    assert n <= 24 and LONG.startswith(text) and LONG[len(text)] == " "
    assert cut_to_budget("Bees make honey.", tokenizer, 24) == ("Bees make honey.", 5)


def test_sampled_pairs_share_a_token_budget_and_repeat_with_the_seed(base_model_dir, untrained_adapter, prompts,
                                                                     tmp_path):
    tokenizer = load_tokenizer(base_model_dir)
    cfg = configured("pairs", max_tokens=24, batch_size=4)
    metrics, pairs = pairs_of(cfg, 0, base_model_dir, untrained_adapter, prompts, tmp_path / "a")
    assert (metrics["pref_train"], metrics["pref_test"]) == (6, 2) and metrics["source"] == "sft model"

    def tokens(pair, key):
        return len(tokenizer(pair[key][0]["content"], add_special_tokens=False)["input_ids"])

    assert tokens(pairs[0], "chosen") <= 24 < len(tokenizer(LONG)["input_ids"])   # the long reply was cut
    for pair in pairs:   # each rejected reply sampled to its chosen reply's length (re-tokenising moves it by 1-2)
        assert pair["rejected"][0]["content"].strip()
        assert abs(tokens(pair, "rejected") - tokens(pair, "chosen")) <= max(3, tokens(pair, "chosen") // 4), pair
    assert abs(metrics["mean_rejected_tokens"] - metrics["mean_chosen_tokens"]) <= 2
    _, again = pairs_of(cfg, 0, base_model_dir, untrained_adapter, prompts, tmp_path / "b")
    _, other_seed = pairs_of(cfg, 1, base_model_dir, untrained_adapter, prompts, tmp_path / "c")
    assert again == pairs and other_seed != pairs


def test_users_own_pairs_replace_the_sampled_ones(base_model_dir, untrained_adapter, prompts, tiny_sets, tmp_path):
    metrics, pairs = pairs_of(configured("pairs", user_pairs=str(tiny_sets["pref"])), 0, base_model_dir, untrained_adapter,
                              prompts, tmp_path / "user")
    assert metrics["source"] == "user" and metrics["pref_train"] + metrics["pref_test"] == 8
    assert sorted(json.dumps(p, sort_keys=True) for p in pairs) == sorted(
        json.dumps(p, sort_keys=True) for p in read_jsonl(tiny_sets["pref"]))
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"prompt": [], "chosen": []}])
    with pytest.raises(ValueError, match=r"rows \[0\] lack prompt, chosen or rejected"):
        pairs_of(configured("pairs", user_pairs=str(bad)), 0, base_model_dir, untrained_adapter, prompts, tmp_path / "bad")


def test_pairs_served_users_made_are_kept_and_only_the_others_sampled(base_model_dir, untrained_adapter, prompts,
                                                                      tmp_path):
    mixed = tmp_path / "prompts"
    mixed.mkdir()
    train = list(read_jsonl(prompts / "train.jsonl"))
    train[1]["rejected"] = [{"role": "assistant", "content": "No idea. " + LONG}]   # a correction replaced this reply
    write_jsonl(mixed / "train.jsonl", train)
    write_jsonl(mixed / "test.jsonl", list(read_jsonl(prompts / "test.jsonl")))
    cfg = configured("pairs", max_tokens=24, batch_size=4)
    metrics, pairs = pairs_of(cfg, 0, base_model_dir, untrained_adapter, mixed, tmp_path / "out")
    _, sampled = pairs_of(cfg, 0, base_model_dir, untrained_adapter, prompts, tmp_path / "all")
    assert metrics["from_feedback"] == 1 and metrics["source"] == "sft model"
    assert pairs[1]["rejected"][0]["content"].startswith("No idea. Paris is")            # the user's, on the budget
    assert len(pairs[1]["rejected"][0]["content"]) < len("No idea. " + LONG)
    assert all(p["rejected"][0]["content"].strip() for p in pairs)                       # the others sampled
    assert sampled[1]["rejected"] != pairs[1]["rejected"]
