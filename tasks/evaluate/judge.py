"""Pairwise LLM-as-judge (MT-Bench style) and the calibration that says whether to believe it.

Each pair is judged twice at temperature 0, once in each order; a verdict that flips with the order is a tie, as in
MT-Bench. Win rate = (wins + ties / 2) / n with a 95% normal interval; answer lengths are recorded because judges
prefer longer answers. The verdict is constrained by a JSON schema (vLLM's `json_schema` response format): small
judges left to `json_object` mode nest keys until max_tokens. A verdict that does not parse is a failure, counted
and never read as a tie.

Calibration: pairs from held-out data whose better reply is known (the reference reply against a reply to another
prompt, a truncated copy, its sentences shuffled, an empty reply, and a longer reply that answers something else),
judged in both orders. Its accuracy decides whether the win rate may gate (`gates.min_judge_calibration`).
"""
from __future__ import annotations

import json
import math
import os
import random
import urllib.error
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tqdm import tqdm

from tasks.common.modeling import split_last_reply
from tasks.common.vllm_server import http_json
from tasks.evaluate.rag import SENTENCE_END

VERDICT_SCHEMA = {"type": "object", "properties": {"verdict": {"type": "string", "enum": ["A", "B", "tie"]}},
                  "required": ["verdict"]}
PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user question displayed below. Choose the assistant that follows the user's instructions and answers the user's "
    "question better. Do not let the order or the length of the responses influence you. Reply with JSON: "
    '{{"verdict": "A"}} if assistant A is better, {{"verdict": "B"}} if assistant B is better, {{"verdict": "tie"}} '
    "for a tie.\n\n[User Question]\n{question}\n\n[The Start of Assistant A's Answer]\n{a}\n"
    "[The End of Assistant A's Answer]\n\n[The Start of Assistant B's Answer]\n{b}\n[The End of Assistant B's Answer]")
PLANTED = ("reply to another prompt", "truncated", "sentences shuffled", "empty", "longer but wrong")


@dataclass
class Judge:
    base_url: str              # an OpenAI-compatible ".../v1"
    model: str
    max_answer_chars: int = 600
    api_key_env: str = ""      # the variable holding the endpoint's key, if it needs one

    def verdict(self, question: str, a: str, b: str) -> str | None:
        """"A", "B" or "tie"; None when the judge's reply does not parse."""
        cut = self.max_answer_chars
        body = {"model": self.model, "temperature": 0.0, "max_tokens": 48,   # room for the whitespace JSON allows
                "messages": [{"role": "user", "content": PROMPT.format(question=question[:cut * 2], a=a[:cut],
                                                                       b=b[:cut])}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "verdict",
                                                                           "schema": VERDICT_SCHEMA}}}
        headers = {"Authorization": f"Bearer {os.environ[self.api_key_env]}"} if self.api_key_env else {}
        try:
            text = http_json(f"{self.base_url}/chat/completions", body, headers=headers)["choices"][0]["message"]
            found = json.loads(text["content"])["verdict"]
        except (urllib.error.HTTPError, ValueError, KeyError, TypeError):   # refused (too long) or unparseable
            return None
        return found if found in ("A", "B", "tie") else None


def pairwise(judge: Judge, question: str, first: str, second: str) -> dict:
    """Both orders; the outcome for `first`: "win", "loss", "tie" (a tie or an order flip), or None (a failed parse)."""
    ab, ba = judge.verdict(question, first, second), judge.verdict(question, second, first)
    as_first = {"A": "win", "B": "loss", "tie": "tie"}.get(ab), {"B": "win", "A": "loss", "tie": "tie"}.get(ba)
    outcome = None if None in as_first else as_first[0] if as_first[0] == as_first[1] else "tie"
    return {"verdict_first_as_a": ab, "verdict_first_as_b": ba, "outcome": outcome}


def judge_all(judge: Judge, triples: list[tuple[str, str, str]], concurrency: int, desc: str = "judge") -> list[dict]:
    with ThreadPoolExecutor(concurrency) as pool:
        return list(tqdm(pool.map(lambda t: pairwise(judge, *t), triples), total=len(triples), desc=desc,
                         unit="pair"))


def win_rate(outcomes: list[str | None]) -> dict:
    scored = [{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes if o is not None]
    n = len(scored)
    rate = sum(scored) / n if n else math.nan
    spread = 1.96 * math.sqrt(sum((s - rate) ** 2 for s in scored) / (n - 1) / n) if n > 1 else math.nan
    return {"n": len(outcomes), "wins": outcomes.count("win"), "losses": outcomes.count("loss"),
            "ties": outcomes.count("tie"), "failed": outcomes.count(None),
            "win_rate": None if math.isnan(rate) else round(rate, 4),
            "ci95": None if math.isnan(spread) else [round(max(0.0, rate - spread), 4),
                                                      round(min(1.0, rate + spread), 4)]}


def planted_pairs(conversations: list[dict], n: int, seed: int) -> list[dict]:
    """For each of the first `n` held-out prompts, five pairs whose better reply is the reference."""
    rng = random.Random(seed)
    splits = [split_last_reply(c["messages"]) for c in conversations]
    replies = [reply[0]["content"] for _, reply in splits]
    pairs = []
    for i, (prompt, _) in enumerate(splits[:n]):
        good = replies[i]
        others = [r for j, r in enumerate(replies) if j != i and r != good]
        sentences = SENTENCE_END.split(good)
        sentences = sentences if len(sentences) > 1 else good.split()
        shuffled = sentences[:]
        while len(set(sentences)) > 1 and shuffled == sentences:
            rng.shuffle(shuffled)
        longer = " ".join(rng.sample(others, len(others)))
        bad = {"reply to another prompt": rng.choice(others), "truncated": good[:max(1, len(good) // 4)],
               "sentences shuffled": " ".join(shuffled), "empty": "",
               "longer but wrong": longer[:max(len(good) * 2, len(good) + 200)]}
        pairs += [{"question": prompt[-1]["content"], "good": good, "bad": bad[kind], "kind": kind} for kind in PLANTED]
    return pairs


def calibrate(judge: Judge, pairs: list[dict], concurrency: int) -> tuple[dict, list[dict]]:
    """Accuracy (judgements naming the better reply, over both orders; a failed parse counts as wrong), the order-flip
    rate (pairs whose two verdicts disagree once mapped back), the parse-failure rate, and accuracy by kind."""
    results = judge_all(judge, [(p["question"], p["good"], p["bad"]) for p in pairs], concurrency, "judge calibration")
    rows = [{"kind": p["kind"], "question": p["question"][:200], **r} for p, r in zip(pairs, results)]
    if not rows:
        return {"pairs": 0, "accuracy": None, "order_flip_rate": None, "parse_failure_rate": None,
                "accuracy_by_kind": {}}, rows
    right = [(r["verdict_first_as_a"] == "A") + (r["verdict_first_as_b"] == "B") for r in rows]
    failed = sum((r["verdict_first_as_a"] is None) + (r["verdict_first_as_b"] is None) for r in rows)
    flips = sum(r["outcome"] == "tie" and "tie" not in (r["verdict_first_as_a"], r["verdict_first_as_b"])
                for r in rows)
    by_kind = {kind: round(sum(k for k, r in zip(right, rows) if r["kind"] == kind)
                           / (2 * sum(r["kind"] == kind for r in rows)), 4) for kind in PLANTED}
    return {"pairs": len(rows), "accuracy": round(sum(right) / (2 * len(rows)), 4),
            "order_flip_rate": round(flips / len(rows), 4), "parse_failure_rate": round(failed / (2 * len(rows)), 4),
            "accuracy_by_kind": by_kind}, rows
