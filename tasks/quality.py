"""Quality filters on one conversation, datatrove-style: each returns a drop reason or None."""
from __future__ import annotations

from collections.abc import Callable

from tasks.config import CleanConfig

Filter = Callable[[list[dict], CleanConfig], "str | None"]


def empty_turn(messages, cfg):
    return "empty_turn" if any(not m["content"].strip() for m in messages) else None


def first_turn_not_user(messages, cfg):
    roles = [m["role"] for m in messages if m["role"] != "system"]
    return "first_turn_not_user" if not roles or roles[0] != "user" else None


def no_assistant_reply(messages, cfg):
    if cfg.require_assistant and not any(m["role"] == "assistant" for m in messages):
        return "no_assistant_reply"
    return None


def length(messages, cfg):
    chars = sum(len(" ".join(m["content"].split())) for m in messages)
    if chars < cfg.min_chars:
        return "too_short"
    return "too_long" if chars > cfg.max_chars else None


FILTERS: list[Filter] = [empty_turn, first_turn_not_user, no_assistant_reply, length]


def quality_reason(messages: list[dict], cfg: CleanConfig) -> str | None:
    for check in FILTERS:
        reason = check(messages, cfg)
        if reason:
            return reason
    return None
