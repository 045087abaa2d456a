"""The record shapes ingest knows, each told by its keys, and the system/user/assistant messages each becomes.

A record is read as the first of these whose key it holds (a key whose value is null counts as absent: Parquet and
datasets give every row every column, null where a row has none):
- `messages`, and ShareGPT's `conversations`: lists of turns, each turn role/content or from/value;
- Alpaca (LLaMA-Factory's form): `instruction`, optional `input`, `output`, optional `history` of [question, answer]
  pairs, which become the turns before it. The user turn is the instruction, then "\\n" and the input when the input
  is not empty: LLaMA-Factory's join (`"\\n".join(query)` in its data/converter.py), so a file made for it reads the
  same here;
- `prompt` with `completion` (or `response`), and `question` with `answer`: one exchange of strings.
A `system` string on any of them becomes a first system message; a conversation with none gets the source's
`system_prompt`, when it has one. A row with `chosen` and `rejected` (and no list of
turns) is a preference pair, not a conversation to train on: it is quarantined as `preference_row` (pairs of
prompt/chosen/rejected go to `pairs.user_pairs`, tasks/train/pairs.py). A file whose keys are named otherwise is read
through the source's `columns` (canonical key -> the file's), its own role tags through its `roles`. What a shape's
record lacks, or holds empty or of the wrong type, is its quarantine reason: `bad_<shape>: <what>`, as `bad_turn: ...`
is for a turn.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import get_args

from tasks.config.data import Column

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
         "bing": "assistant", "assistant": "assistant", "model": "assistant", "system": "system"}
ALPACA_JOIN = "\n"                           # between instruction and input, as LLaMA-Factory joins them
_SURROGATE = re.compile("[\ud800-\udfff]")


class Malformed(ValueError):
    """A record that cannot become a conversation; the message is the quarantine reason."""


def _text_fault(text: str) -> str | None:
    """Why a string cannot be kept: a NUL (it truncates C strings downstream), or a lone surrogate (from an escape
    such as \\ud83d without its pair: it has no UTF-8 encoding, so the row could not even be written)."""
    if "\x00" in text:
        return "nul_byte"
    return "lone_surrogate" if not text.isascii() and _SURROGATE.search(text) else None


def record_id(record: object) -> str | None:
    rid = record.get("id") if isinstance(record, dict) else None
    return None if rid is None else str(rid)


def _message(role: str, text: str) -> dict:
    fault = _text_fault(text)
    if fault:
        raise Malformed(fault)
    return {"role": role, "content": text}


class Shapes:
    """Reads records of every known shape as (source id, messages), through a source's column map and role tags,
    with its system prompt ("" = none) for conversations that have none."""

    def __init__(self, columns: Mapping[str, str] | None = None, roles: Mapping[str, str] | None = None,
                 system_prompt: str = ""):
        columns = dict(columns or {})
        self.keys = {name: [columns.get(name, name)] for name in get_args(Column)}   # the file's keys, in order
        if "completion" not in columns:
            self.keys["completion"].append("response")         # prompt/response, unless the map names the key
        self.roles = ROLES | {tag.lower(): role for tag, role in (roles or {}).items()}
        # a map that reads `chosen` as a shape's key (SFT on the chosen replies) asks for those rows to be read
        self.pairs_refused = not {"chosen", "rejected"} & set(columns.values())
        self.system_prompt = system_prompt

    def __call__(self, record: object) -> tuple[str | None, list[dict]]:
        if not isinstance(record, dict):
            raise Malformed("not_an_object")
        messages = self._turns(record)
        system = self._text(record, "system", "bad_system", required=False)
        if system:
            if messages[0]["role"] == "system":
                raise Malformed("bad_system: a_second_system_prompt")
            messages.insert(0, _message("system", system))
        elif self.system_prompt and messages[0]["role"] != "system":
            messages.insert(0, _message("system", self.system_prompt))
        rid = record_id(record)
        fault = _text_fault(rid) if rid else None
        if fault:
            raise Malformed(fault)
        return rid, messages

    def _value(self, record: dict, name: str) -> object:
        """The value under canonical key `name`: the first of the file's keys for it that is there and not null."""
        return next((record[key] for key in self.keys[name] if record.get(key) is not None), None)

    def _turns(self, record: dict) -> list[dict]:
        turns = self._value(record, "messages")
        turns = self._value(record, "conversations") if turns is None else turns
        if turns is not None:
            return self._conversation(turns)
        if self.pairs_refused and record.get("chosen") is not None and record.get("rejected") is not None:
            raise Malformed("preference_row")
        if self._value(record, "instruction") is not None:
            return self._alpaca(record)
        for family, ask, reply in (("bad_prompt_completion", "prompt", "completion"),
                                   ("bad_question_answer", "question", "answer")):
            if self._value(record, ask) is not None:
                return [_message("user", self._text(record, ask, family)),
                        _message("assistant", self._text(record, reply, family))]
        raise Malformed("missing_messages")

    def _conversation(self, turns: object) -> list[dict]:
        if not isinstance(turns, list):
            raise Malformed("messages_not_a_list")
        if not turns:
            raise Malformed("empty_conversation")
        messages = []
        for turn in turns:
            if not isinstance(turn, dict):
                raise Malformed("bad_turn: turn_not_an_object")
            text_key = "value" if turn.get("value") is not None else "content"
            if text_key not in turn:
                raise Malformed("bad_turn: missing_content")
            if not isinstance(turn[text_key], str):
                raise Malformed("bad_turn: content_not_a_string")
            role = self.roles.get(str(turn.get("from" if turn.get("from") is not None else "role", "")).lower())
            if role is None:
                raise Malformed("unknown_role")
            messages.append(_message(role, turn[text_key]))
        return messages

    def _alpaca(self, record: dict) -> list[dict]:
        instruction = self._text(record, "instruction", "bad_alpaca")
        extra = self._text(record, "input", "bad_alpaca", required=False)
        output = self._text(record, "output", "bad_alpaca")
        history = self._value(record, "history")
        history = [] if history is None else history
        if not isinstance(history, list) or not all(
                isinstance(pair, list) and len(pair) == 2 and all(isinstance(text, str) for text in pair)
                for pair in history):
            raise Malformed("bad_alpaca: history_not_pairs")
        earlier = [_message(role, text) for pair in history for role, text in zip(("user", "assistant"), pair)]
        ask = ALPACA_JOIN.join([instruction, extra]) if extra else instruction
        return [*earlier, _message("user", ask), _message("assistant", output)]

    def _text(self, record: dict, name: str, family: str, required: bool = True) -> str | None:
        """The string under canonical key `name`; a required one must be there and not blank."""
        value = self._value(record, name)
        if value is None:
            if required:
                raise Malformed(f"{family}: missing_{name}")
            return None
        if not isinstance(value, str):
            raise Malformed(f"{family}: {name}_not_a_string")
        if required and not value.strip():
            raise Malformed(f"{family}: empty_{name}")
        return value


normalise = Shapes()       # the built-in keys and role tags: what benchmarks and tests read the embedded default with
