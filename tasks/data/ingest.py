"""Stage 2: read raw conversations from any supported source into one schema, quarantining what does not fit.

Output rows are `{"id", "source", "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`.
With canaries asked for (`evaluate.canaries`, tasks/data/canaries.py), every 37th kept row gets one. Every input
record ends up in exactly one of the two outputs; the quarantine keeps the raw record and the reason so
nothing is lost and a fix can be replayed. Sources are read as streams: memory follows the longest record, not the
file. The readers, and the checks that refuse a source before reading it, are tasks/data/ingest_read.py. A source
with no records stops the stage unless `ingest.allow_empty` says that is expected: a wrong path or an emptied export
would otherwise train on nothing.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from tasks.common.jsonl import atomic_writer, write_json
from tasks.config import IngestConfig
from tasks.data.canaries import EVERY_NTH_ROW, Canary, plant
from tasks.data.ingest_read import (  # noqa: F401 - tests and benchmarks import these from here
    EMBEDDED,
    SourceError,
    _json_array_records,
    raw_records,
    sharegpt_package_file,
)
from tasks.paths import Paths

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
         "bing": "assistant", "assistant": "assistant", "model": "assistant", "system": "system"}
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


def normalise(record: object) -> tuple[str | None, list[dict]]:
    """(source id, messages) of one record in `messages` (role/content) or ShareGPT (from/value) form."""
    if not isinstance(record, dict):
        raise Malformed("not_an_object")
    turns, role_key, text_key = record.get("messages"), "role", "content"
    if turns is None:
        turns, role_key, text_key = record.get("conversations"), "from", "value"
    if turns is None:
        raise Malformed("missing_messages")
    if not isinstance(turns, list):
        raise Malformed("messages_not_a_list")
    if not turns:
        raise Malformed("empty_conversation")
    messages = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise Malformed("bad_turn: turn_not_an_object")
        if text_key not in turn:
            raise Malformed("bad_turn: missing_content")
        if not isinstance(turn[text_key], str):
            raise Malformed("bad_turn: content_not_a_string")
        role = ROLES.get(str(turn.get(role_key, "")).lower())
        if role is None:
            raise Malformed("unknown_role")
        fault = _text_fault(turn[text_key])
        if fault:
            raise Malformed(fault)
        messages.append({"role": role, "content": turn[text_key]})
    rid = record_id(record)
    fault = _text_fault(rid) if rid else None
    if fault:
        raise Malformed(fault)
    return rid, messages


def ingest(cfg: IngestConfig, out: Path = Paths.ingested, quarantine: Path = Paths.quarantine,
           report: Path = Paths.ingest_report, canaries: list[Canary] = ()) -> dict:
    """Quarantine entries are `{"index", "line", "id", "reason"}` plus the record: `record`, the JSON value, when it
    parsed; else `raw`, its text, where bytes that are not UTF-8 are lone surrogates (errors="surrogateescape":
    `raw.encode("utf-8", "surrogateescape")` gives the exact bytes back, and the text around them stays readable,
    which base64 would not). The quarantine is written ASCII-only, so those surrogates (and any a record parsed
    to) are \\udcXX escapes and the file itself is valid UTF-8 JSONL."""
    rows_in, kept, dropped, seen_ids, planted = 0, 0, Counter(), set(), []
    records = raw_records(cfg.source)       # a source it refuses is refused before an output is opened
    with atomic_writer(out) as good, atomic_writer(quarantine) as bad:
        for index, (line, record, reason) in enumerate(tqdm(records, desc="ingest", unit="rec")):
            if cfg.max_records and index >= cfg.max_records:
                break
            rows_in += 1
            parsed = reason is None
            if parsed:
                try:
                    rid, messages = normalise(record)
                    rid = rid or f"row{index}"
                    if rid in seen_ids:
                        raise Malformed("duplicate_id")
                except Malformed as err:
                    reason = str(err)
            if reason is not None:
                dropped[reason.split(":")[0]] += 1
                entry = {"index": index, "line": line, "id": record_id(record), "reason": reason,
                         "record" if parsed else "raw": record}
                bad.write(json.dumps(entry) + "\n")
                continue
            seen_ids.add(rid)
            if len(planted) < len(canaries) and kept % EVERY_NTH_ROW == 0:
                with_canary = plant(messages, canaries[len(planted)])
                if with_canary:
                    messages = with_canary
                    planted.append(rid)
            good.write(json.dumps({"id": rid, "source": cfg.source, "messages": messages}, ensure_ascii=False) + "\n")
            kept += 1
        if rows_in == dropped["blank_line"] and not cfg.allow_empty:     # raised here, nothing is written
            blank = f" (only {rows_in} blank lines)" if rows_in else ""
            raise SourceError(f"ingest.source {cfg.source!r} holds no records{blank}: set ingest.allow_empty: true "
                             f"if an empty source is expected")
    counts = {"rows_in": rows_in, "rows_kept": kept, "rows_quarantined": sum(dropped.values()),
              "quarantined_by_reason": dict(dropped), "canaries_planted": len(planted), "canary_rows": planted}
    if rows_in != kept + counts["rows_quarantined"]:
        raise AssertionError(f"ingest counts do not reconcile: {counts}")
    write_json(report, counts)
    return counts
