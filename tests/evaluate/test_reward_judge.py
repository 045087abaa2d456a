"""The reward model as a judge (tasks/evaluate/reward_judge.py), with the tiny reward model that learned "a fact
beats the stock non-answer": a candidate that answers nothing loses every prompt to one that answers, and the
calibration is measured on the LLM judge's planted pairs, kind by kind."""
import pytest

from tasks.evaluate.judge import PLANTED, planted_pairs
from tests.conftest import HELD_OUT_FACTS, NON_ANSWER, conversation

pytestmark = pytest.mark.slow


def test_a_candidate_that_answers_nothing_loses_every_prompt(tiny_reward_model):
    from tasks.evaluate.reward_judge import reward_judge

    prompts = [[{"role": "user", "content": q}] for q, _ in HELD_OUT_FACTS]
    answers = [a for _, a in HELD_OUT_FACTS]
    convs = [conversation(q, a, f"h{i}") for i, (q, a) in enumerate(HELD_OUT_FACTS)]
    figures, tables = reward_judge(tiny_reward_model[1], prompts, [NON_ANSWER] * 4, answers, "champion v1",
                                   planted_pairs(convs, 4, 0), 128)
    assert (figures["wins"], figures["losses"], figures["win_rate"]) == (0, 4, 0.0)
    assert figures["opponent"] == "champion v1" and len(tables["reward_judge"]) == 4
    assert all(r["reward_opponent"] > r["reward_candidate"] for r in tables["reward_judge"])
    cal = figures["calibration"]
    assert cal["pairs"] == 4 * len(PLANTED) == len(tables["reward_judge_calibration"])
    assert set(cal["accuracy_by_kind"]) == set(PLANTED) and 0 <= cal["accuracy"] <= 1
    right = sum(r["reward_good"] > r["reward_bad"] for r in tables["reward_judge_calibration"])
    assert cal["accuracy"] == round(right / cal["pairs"], 4)


def test_swapped_sides_swap_the_outcome(tiny_reward_model):
    from tasks.evaluate.reward_judge import reward_judge

    prompts = [[{"role": "user", "content": q}] for q, _ in HELD_OUT_FACTS]
    answers = [a for _, a in HELD_OUT_FACTS]
    figures, _ = reward_judge(tiny_reward_model[1], prompts, answers, [NON_ANSWER] * 4, "base", [], 128)
    assert (figures["wins"], figures["losses"], figures["win_rate"]) == (4, 0, 1.0)
    assert figures["calibration"]["accuracy"] is None          # nothing planted: no calibration, so no gate
