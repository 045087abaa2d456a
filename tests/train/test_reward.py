"""The reward stage learns a preference it was shown and carries it to prompts it never saw: chosen answers are facts,
rejected ones a stock non-answer; on held-out facts the reward model must rank the answer above the non-answer. The
model it saves (LoRA merged into the head's body) scores exactly as the one it evaluated."""
import json

import pytest

from tests.conftest import HELD_OUT_FACTS

pytestmark = pytest.mark.slow


def test_the_reward_model_ranks_held_out_answers_above_the_non_answer(tiny_reward_model):
    metrics, _ = tiny_reward_model
    assert metrics["steps"] == 4 and metrics["held_out_pairs"] == len(HELD_OUT_FACTS)
    assert metrics["held_out_accuracy"] == 1.0 and metrics["held_out_margin_mean"] > 0.5, metrics
    assert -1 <= metrics["reward_length_correlation"] <= 1


def test_the_saved_model_scores_as_the_evaluated_one(tiny_reward_model):
    from tasks.train.reward import load_reward_model, score

    _, out = tiny_reward_model
    assert (out / "margins.png").stat().st_size > 0 and not (out / "adapter_config.json").exists()
    model, tokenizer = load_reward_model(out)
    saved = json.loads((out / "held_out_scores.json").read_text())
    prompts = [[{"role": "user", "content": q}] for q, _ in HELD_OUT_FACTS]
    chosen = score(model, tokenizer, prompts, [a for _, a in HELD_OUT_FACTS], 128)
    assert chosen == pytest.approx([row["chosen"] for row in saved], abs=1e-3)
