"""The feedback store: what `make serve` recorded (tasks/serve/recorder.py) and how it becomes the next round's data.

    data/feedback/live/events-*.jsonl     being appended by the serving proxy; no stage reads it
    data/feedback/rounds/round-NNNN/      closed by `cut`: DVC-tracked (rounds.dvc), an ingest source of kind feedback

Each line is an event, already scrubbed of PII when it was written:
    {"event": "exchange", "id", "ts", "version", "messages": [...], "reply", "latency_s", "prompt_tokens", ...}
    {"event": "feedback", "id", "ts", "rating": 1 | -1 | null, "correction": str | null, "picked_over": id (A/B)}

Why rounds: a store the proxy appends to would make every request a reason to retrain (DVC hashes a dependency
whole). `cut` closes the live files into a round only when `flywheel.min_new_rows` rows of feedback are there, so
the ingest dependency moves once per round, and `retrain-check` says why (`due`).

What becomes training data (`feedback_records`): a corrected reply (the prompt with the user's correction as the
answer), a liked reply (+1) and an A/B pick are SFT rows; each is also a preference pair when the user said what was
worse (the reply the correction replaced, a disliked reply to the same prompt, the answer not picked). A disliked
reply with nothing better for its prompt teaches nothing alone and is only counted. The latest feedback on an exchange wins.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tasks.data.ingest_read import _jsonl_records
from tasks.paths import Paths

EVENTS_GLOB = "events-*.jsonl"


def events(folder: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line number, event, None) for each event in `folder`'s files, in name order (names start with the time);
    (line, None, reason) for a line that is not one. Lines are read by ingest's own JSONL reader (BOM, bad UTF-8 and
    NUL bytes handled as for any source); blank lines are skipped."""
    for path in sorted(Path(folder).rglob(EVENTS_GLOB)):
        for number, event, reason in _jsonl_records(path):
            if reason == "blank_line":
                continue
            ok = reason is None and isinstance(event, dict) and event.get("event") in ("exchange", "feedback") \
                and event.get("id")
            yield number, event if ok else None, None if ok else f"{reason or 'not_an_event'}: {path.name}:{number}"


def _kind(feedback: dict) -> str:
    if feedback.get("picked_over"):
        return "picked"
    if feedback.get("correction"):
        return "corrected"
    return {1: "liked", -1: "disliked"}.get(feedback.get("rating"), "unrated")


def latest_feedback(folder: Path) -> tuple[dict[str, dict], dict[str, dict], list[str]]:
    """(exchanges by id, the latest feedback by id, the lines that were not events)."""
    exchanges, feedback, bad = {}, {}, []
    for _, event, reason in events(folder):
        if reason:
            bad.append(reason)
        elif event["event"] == "exchange":
            exchanges[event["id"]] = event
        else:
            feedback[event["id"]] = event
    return exchanges, feedback, bad


def feedback_records(folder: Path, counts: Counter) -> Iterator[tuple[int | None, object, str | None]]:
    """Ingest's records from the closed rounds, as (line, record, reason) like every reader (tasks/data/ingest_read.py):
    a `messages` record per corrected or liked exchange, with `rejected` when the user also said what was worse (the
    reply a correction replaced; a disliked reply to the same prompt): a preference pair (tasks/train/pairs.py).
    `counts` gets every feedback row by kind, and the pairs."""
    exchanges, feedback, bad = latest_feedback(folder)
    for reason in bad:
        yield None, None, reason
    disliked = {}   # prompt -> a reply the user disliked
    for rid, said in feedback.items():
        if _kind(said) == "disliked" and rid in exchanges:
            disliked[_prompt_key(exchanges[rid])] = exchanges[rid].get("reply")
    for rid, said in feedback.items():
        kind = _kind(said)
        counts[kind] += 1
        exchange = exchanges.get(rid)
        if kind not in ("corrected", "liked", "picked"):
            continue
        if exchange is None:   # the exchange aged out of the live store before its round was cut
            counts["without_exchange"] += 1
            continue
        reply = said["correction"] if kind == "corrected" else exchange.get("reply")
        if kind == "picked":   # an A/B pick: the other version's answer is the worse one; the win is counted
            worse = exchanges.get(said["picked_over"], {}).get("reply")
            counts[f"picked_v{exchange.get('version')}"] += 1
        else:
            worse = exchange.get("reply") if kind == "corrected" else disliked.get(_prompt_key(exchange))
        record = {"id": rid, "messages": [*exchange.get("messages", []), {"role": "assistant", "content": reply}]}
        if worse and worse.strip() and worse.strip() != reply.strip():
            record["rejected"] = worse
            counts["pairs"] += 1
        yield None, record, None


def _prompt_key(exchange: dict) -> str:
    return json.dumps(exchange.get("messages", []), sort_keys=True)


def pending(live: Path = Paths.feedback_live) -> Counter:
    """Feedback rows by kind in the live store: what the next `cut` would close into a round."""
    return Counter(_kind(event) for _, event, _ in events(live) if event and event["event"] == "feedback")


def picks_by_version(store: Path = Paths.feedback) -> Counter:
    """A/B picks won by each served version, over the whole store (live and closed rounds): the online win rate."""
    exchanges, feedback, _ = latest_feedback(store)
    return Counter(f"v{exchanges[rid].get('version')}" for rid, said in feedback.items()
                   if _kind(said) == "picked" and rid in exchanges)


def due(min_new_rows: int, live: Path = Paths.feedback_live) -> str:
    """Why a retrain is due on feedback, in words; '' when fewer than `min_new_rows` rows came since the last round."""
    counts = pending(live)
    if counts.total() < min_new_rows:
        return ""
    kinds = ", ".join(f"{n} {kind}" for kind, n in counts.most_common())
    return (f"{live}: {counts.total()} feedback rows since the last round ({kinds}; flywheel.min_new_rows "
            f"{min_new_rows}): the run cuts them into a round")


def cut(min_new_rows: int, force: bool = False, live: Path = Paths.feedback_live,
        rounds: Path = Paths.feedback_rounds) -> Path | None:
    """Close the live files into the next round when feedback is due (or `force`); the round's folder, else None.

    A file is moved, not copied: the recorder opens its file for each line, so a line written while this runs lands
    in the round or in a new live file, never in both and never lost. The rounds folder is then `dvc add`ed, when
    this is a DVC project and the rounds are in it, so the round is versioned and pushed like every dataset (it
    holds no raw text)."""
    files = sorted(Path(live).glob(EVENTS_GLOB))
    if not files or not (force or due(min_new_rows, live)):
        return None
    done = sorted(Path(rounds).glob("round-*"))
    folder = Path(rounds) / f"round-{int(done[-1].name.split('-')[1]) + 1 if done else 1:04d}"
    folder.mkdir(parents=True)
    for path in files:
        path.rename(folder / path.name)
    if Path(".dvc").is_dir() and Path(rounds).resolve().is_relative_to(Path.cwd()):
        from dvc.repo import Repo

        with Repo(".") as repo:
            repo.add([str(rounds)])
    return folder


def main(argv: list[str]) -> int:
    """`python -m tasks flywheel [status | cut [--force]]`: the feedback since the last round; close it into one."""
    import argparse

    from tasks.config import load_config

    parser = argparse.ArgumentParser(prog="python -m tasks flywheel", description=main.__doc__)
    parser.add_argument("action", choices=["status", "cut"], nargs="?", default="status")
    parser.add_argument("--force", action="store_true", help="cut even below flywheel.min_new_rows")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    threshold = load_config(args.params).flywheel.min_new_rows
    if args.action == "status":
        counts, picks = pending(), picks_by_version()
        print(json.dumps({"feedback_rows": counts.total(), **counts, "min_new_rows": threshold,
                          "due": counts.total() >= threshold, "ab_picks_won": dict(picks),
                          "ab_win_rate": {v: round(n / picks.total(), 3) for v, n in picks.items()}}))
        return 0
    folder = cut(threshold, args.force)
    print(f"closed {folder}" if folder else f"nothing cut: {pending().total()} feedback rows since the last round, "
                                            f"flywheel.min_new_rows is {threshold} (--force cuts anyway)")
    return 0
