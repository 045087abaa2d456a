"""Stage 2: read raw conversations from any supported source into one schema, quarantining what does not fit.

Output rows are `{"id", "source", "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`.
With canaries asked for (`evaluate.canaries`, tasks/data/canaries.py), every 37th kept row gets one. Every input
record ends up in exactly one of the two outputs; the quarantine keeps the raw record and the reason so
nothing is lost and a fix can be replayed. Sources are read as streams: memory follows the longest record, not the
file. The readers, and the checks that refuse a source before reading it, are tasks/data/ingest_read.py; the record
shapes known (messages, ShareGPT, Alpaca, prompt/completion, question/answer), tasks/data/ingest_shapes.py. A source
with no records stops the stage unless `ingest.allow_empty` says that is expected: a wrong path or an emptied export
would otherwise train on nothing.
"""
from __future__ import annotations

import json
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
from tasks.data.ingest_shapes import Malformed, Shapes, normalise, record_id  # noqa: F401 - normalise: for them too
from tasks.paths import Paths


def ingest(cfg: IngestConfig, out: Path = Paths.ingested, quarantine: Path = Paths.quarantine,
           report: Path = Paths.ingest_report, canaries: list[Canary] = ()) -> dict:
    """Quarantine entries are `{"index", "line", "id", "reason"}` plus the record: `record`, the JSON value, when it
    parsed; else `raw`, its text, where bytes that are not UTF-8 are lone surrogates (errors="surrogateescape":
    `raw.encode("utf-8", "surrogateescape")` gives the exact bytes back, and the text around them stays readable,
    which base64 would not). The quarantine is written ASCII-only, so those surrogates (and any a record parsed
    to) are \\udcXX escapes and the file itself is valid UTF-8 JSONL."""
    rows_in, kept, dropped, seen_ids, planted = 0, 0, Counter(), set(), []
    records = raw_records(cfg.source)       # a source it refuses is refused before an output is opened
    shapes = Shapes(cfg.columns, cfg.roles)
    with atomic_writer(out) as good, atomic_writer(quarantine) as bad:
        for index, (line, record, reason) in enumerate(tqdm(records, desc="ingest", unit="rec")):
            if cfg.max_records and index >= cfg.max_records:
                break
            rows_in += 1
            parsed = reason is None
            if parsed:
                try:
                    rid, messages = shapes(record)
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
