"""The reward model as a second judge: the candidate's and the opponent's answers to the pairwise judge's held-out
prompts, each scored by the reward stage's model; the higher reward wins (equal rewards: a tie).

It is calibrated exactly as the LLM judge is (tasks/evaluate/judge.py: the reference reply against a reply to
another prompt, a truncated copy, its sentences shuffled, an empty reply, a longer reply that answers something
else), and its win rate gates only when that calibration passes. A scalar scorer reads each answer alone, so it has
no order to flip and nothing to parse: those two rates are 0 by construction, not measured.
"""
from __future__ import annotations

from pathlib import Path

from tasks.evaluate.judge import PLANTED, win_rate
from tasks.train.reward import load_reward_model, score


def _user(question: str) -> list[dict]:
    return [{"role": "user", "content": question}]


def outcome(mine: float, theirs: float) -> str:
    return "win" if mine > theirs else "loss" if mine < theirs else "tie"


def calibration(model, tokenizer, planted: list[dict], max_length: int) -> tuple[dict, list[dict]]:
    """Accuracy on planted pairs (the reference rewarded above the planted worse reply), overall and by kind."""
    prompts = [_user(p["question"]) for p in planted]
    good = score(model, tokenizer, prompts, [p["good"] for p in planted], max_length)
    bad = score(model, tokenizer, prompts, [p["bad"] for p in planted], max_length)
    rows = [{"kind": p["kind"], "question": p["question"][:200], "reward_good": round(g, 4), "reward_bad": round(b, 4),
             "right": g > b} for p, g, b in zip(planted, good, bad)]
    by_kind = {kind: round(sum(r["right"] for r in rows if r["kind"] == kind)
                           / max(1, sum(r["kind"] == kind for r in rows)), 4) for kind in PLANTED}
    return {"pairs": len(rows), "accuracy": round(sum(r["right"] for r in rows) / len(rows), 4) if rows else None,
            "order_flip_rate": 0.0, "parse_failure_rate": 0.0, "accuracy_by_kind": by_kind}, rows


def reward_judge(reward_model: Path, prompts: list[list[dict]], candidate: list[str], opponent: list[str],
                 opponent_name: str, planted: list[dict], max_length: int) -> tuple[dict, dict[str, list[dict]]]:
    """The Judge figures (tasks/evaluate/figures.py) of the reward model, and its tables (per answer, calibration)."""
    if not (reward_model / "config.json").exists():
        raise FileNotFoundError(f"evaluate: no reward model in {reward_model}: run the reward stage first "
                                "(`python -m tasks run reward`; `make pipeline` and `dvc repro` run it before evaluate)")
    model, tokenizer = load_reward_model(reward_model)
    mine = score(model, tokenizer, prompts, candidate, max_length)
    theirs = score(model, tokenizer, prompts, opponent, max_length)
    outcomes = [outcome(m, t) for m, t in zip(mine, theirs)]
    calibrated, calibration_rows = calibration(model, tokenizer, planted, max_length)
    rows = [{"question": p[-1]["content"][:200], "candidate": c, "opponent": o, "reward_candidate": round(m, 4),
             "reward_opponent": round(t, 4), "outcome": x}
            for p, c, o, m, t, x in zip(prompts, candidate, opponent, mine, theirs, outcomes)]
    chars = {"candidate": [len(a) for a in candidate], "opponent": [len(a) for a in opponent]}
    figures = {"judge": f"reward model {reward_model}", "opponent": opponent_name, **win_rate(outcomes),
               "calibration": calibrated,
               "mean_answer_chars": {k: round(sum(v) / len(v), 1) if v else None for k, v in chars.items()}}
    return figures, {"reward_judge": rows, "reward_judge_calibration": calibration_rows}
