"""The pairwise judge: order flips become ties, the win rate and its interval, planted calibration pairs whose
better reply is known, and a real judge (the base model on vLLM) whose schema-constrained verdicts parse."""
import math

import pytest

from tasks.evaluate.judge import PLANTED, Judge, calibrate, pairwise, planted_pairs, win_rate
from tests.conftest import configured, conversation

FACTS = [("What is the capital of France?", "The capital of France is Paris. It lies on the Seine."),
         ("What do bees make?", "Bees make honey. They store it in wax combs."),
         ("How many legs does a spider have?", "A spider has eight legs. Insects have six."),
         ("What is frozen water called?", "Frozen water is called ice. It floats on water.")]
CONVS = [conversation(q, a, f"c{i}") for i, (q, a) in enumerate(FACTS)]


class Scripted(Judge):
    """A judge whose verdict is a function of the two answers (the logic under test is what happens around it)."""

    def __init__(self, decide):
        super().__init__("unused", "unused")
        self.decide = decide

    def verdict(self, question, a, b):
        return self.decide(question, a, b)


def test_a_verdict_that_flips_with_the_order_is_a_tie():
    positional = Scripted(lambda q, a, b: "A")
    assert pairwise(positional, "q", "x", "y")["outcome"] == "tie"
    longer = Scripted(lambda q, a, b: "A" if len(a) > len(b) else "B")
    assert pairwise(longer, "q", "long answer", "short")["outcome"] == "win"
    assert pairwise(longer, "q", "short", "long answer")["outcome"] == "loss"
    assert pairwise(Scripted(lambda q, a, b: None), "q", "x", "y")["outcome"] is None


def test_win_rate_counts_ties_as_half_and_never_averages_failures_in():
    result = win_rate(["win", "win", "tie", "loss", None])
    assert result["win_rate"] == pytest.approx(2.5 / 4) and result["failed"] == 1 and result["n"] == 5
    low, high = result["ci95"]
    assert 0.0 <= low < 0.625 < high <= 1.0
    assert win_rate([None, None])["win_rate"] is None


def test_planted_pairs_keep_the_reference_as_the_better_reply():
    pairs = planted_pairs(CONVS, 2, seed=0)
    assert [p["kind"] for p in pairs] == list(PLANTED) * 2
    by_kind = {p["kind"]: p for p in pairs[:5]}
    good = FACTS[0][1]
    assert all(p["good"] == good and p["bad"] != good for p in pairs[:5])
    assert by_kind["empty"]["bad"] == "" and len(by_kind["truncated"]["bad"]) < len(good)
    assert sorted(by_kind["sentences shuffled"]["bad"].split()) == sorted(good.split())
    assert len(by_kind["longer but wrong"]["bad"]) > len(good) and "Paris" not in by_kind["longer but wrong"]["bad"]
    assert by_kind["reply to another prompt"]["bad"] in [a for _, a in FACTS[1:]]


def test_calibration_tells_a_judge_that_knows_from_one_that_picks_by_position():
    pairs = planted_pairs(CONVS, 4, seed=0)
    oracle = Scripted(lambda q, a, b: "A" if a == dict(FACTS)[q] else "B")
    knows, _ = calibrate(oracle, pairs, concurrency=2)
    assert knows["accuracy"] == 1.0 and knows["order_flip_rate"] == 0.0 and knows["parse_failure_rate"] == 0.0
    guesses, rows = calibrate(Scripted(lambda q, a, b: "A"), pairs, concurrency=2)
    assert guesses["accuracy"] == 0.5 and guesses["order_flip_rate"] == 1.0 and len(rows) == 20
    assert set(guesses["accuracy_by_kind"]) == set(PLANTED)


@pytest.mark.slow
def test_the_base_model_judges_in_schema_and_its_calibration_is_measured(base_server):
    from tasks.common.vllm_server import SERVED_NAME

    judge = Judge(f"{base_server.base_url}/v1", SERVED_NAME)
    summary, rows = calibrate(judge, planted_pairs(CONVS, 2, seed=0), concurrency=4)
    assert summary["parse_failure_rate"] == 0.0          # json_schema output: every verdict parses
    assert all(r["verdict_first_as_a"] in ("A", "B", "tie") for r in rows)
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["pairs"] == 10


@pytest.mark.slow
def test_ragas_llm_metrics_score_through_the_served_judge(base_server):
    from tasks.common.vllm_server import SERVED_NAME
    from tasks.evaluate.rag import JUDGED, held_out_set, judge_llm, judged_scores

    rag_set = held_out_set(CONVS, configured("evaluate.rag", passage_chars=60))
    rows = [{"question": q["question"], "answer": q["reference"], "retrieved": str(q["relevant"])}
            for q in rag_set.questions[:2]]
    summary = judged_scores(judge_llm(f"{base_server.base_url}/v1", SERVED_NAME, 256), rows, rag_set, 4)
    assert summary["judged_questions"] == 2
    for name in JUDGED:
        assert 0.0 <= summary[f"{name}_nan_rate"] <= 1.0
        assert all(math.isnan(r[name]) or 0.0 <= r[name] <= 1.0 for r in rows)
    assert summary["answer_relevancy_nan_rate"] == 0.0   # schema-constrained: the question generation parses
