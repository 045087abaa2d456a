"""Stage 2: read raw conversations from every source (`ingest.sources`) into one schema, quarantining what does not fit.

Output rows are `{"id", "source", "messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}`, the
sources' rows one source after another. With one source a row keeps the source's own id; with more, the id is
`<source name>/<its id>`, so ids stay unique across sources. With canaries asked for (`evaluate.canaries`,
tasks/data/canaries.py), every 37th kept row gets one. Every input record ends up in exactly one of the two outputs;
the quarantine keeps the raw record, its source and the reason so nothing is lost and a fix can be replayed. Sources
are read as streams: memory follows the longest record, not the file. The readers, and the checks that refuse a
source before reading it, are tasks/data/ingest_read.py; the record shapes known (messages, ShareGPT, Alpaca,
prompt/completion, question/answer), tasks/data/ingest_shapes.py; a source of kind feedback, what `make serve`
recorded (tasks/data/feedback.py). A source with no records stops the stage unless
`ingest.allow_empty` says that is expected: a wrong path or an emptied export would otherwise train on nothing.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from tasks.common.jsonl import atomic_writer, write_json
from tasks.config import IngestConfig, SourceConfig
from tasks.data.canaries import EVERY_NTH_ROW, Canary, plant
from tasks.data.feedback import feedback_records
from tasks.data.ingest_read import (  # noqa: F401 - tests and benchmarks import these from here
    EMBEDDED,
    SourceError,
    _json_array_records,
    raw_records,
    sharegpt_package_file,
)
from tasks.data.ingest_shapes import Malformed, Shapes, normalise, record_id  # noqa: F401 - normalise: for them too
from tasks.paths import Paths


class _Outputs:
    """The two output files the sources are written to in turn: ids unique across them, a canary every 37th kept
    row of the whole corpus."""

    def __init__(self, good: TextIO, bad: TextIO, canaries: list[Canary]):
        self.good, self.bad, self.canaries = good, bad, canaries
        self.ids, self.planted = set(), []

    def keep(self, rid: str, source: str, messages: list[dict], rejected: str | None = None) -> None:
        """`rejected`: a worse reply to the same prompt (feedback), kept beside the row for the pairs stage."""
        if len(self.planted) < len(self.canaries) and len(self.ids) % EVERY_NTH_ROW == 0:
            with_canary = plant(messages, self.canaries[len(self.planted)])
            if with_canary:
                messages = with_canary
                self.planted.append(rid)
        self.ids.add(rid)
        row = {"id": rid, "source": source, "messages": messages} | ({"rejected": rejected} if rejected else {})
        self.good.write(json.dumps(row, ensure_ascii=False) + "\n")

    def quarantine(self, entry: dict) -> None:
        self.bad.write(json.dumps(entry) + "\n")


def _read_source(source: SourceConfig, records: Iterator, cfg: IngestConfig, out: _Outputs, prefix: str) -> dict:
    """One source's records into the outputs; its counts."""
    shapes = Shapes(source.columns, source.roles,
                    cfg.system_prompt if source.system_prompt is None else source.system_prompt)
    cap = min((n for n in (source.max_rows, cfg.max_records) if n), default=0)
    rows_in, kept, dropped = 0, 0, Counter()
    for index, (line, record, reason) in enumerate(tqdm(records, desc=f"ingest {source.label}", unit="rec")):
        if cap and index >= cap:
            break
        rows_in += 1
        parsed = reason is None
        if parsed:
            try:
                rid, messages = shapes(record)
                rid = prefix + (rid or f"row{index}")
                if rid in out.ids:
                    raise Malformed("duplicate_id")
            except Malformed as err:
                reason = str(err)
        if reason is not None:
            dropped[reason.split(":")[0]] += 1
            out.quarantine({"index": index, "line": line, "id": record_id(record), "reason": reason,
                            "source": source.label, "record" if parsed else "raw": record})
            continue
        out.keep(rid, source.label, messages, record.get("rejected") if source.kind == "feedback" else None)
        kept += 1
    if rows_in == dropped["blank_line"] and not cfg.allow_empty:     # raised here, nothing is written
        blank = f" (only {rows_in} blank lines)" if rows_in else ""
        raise SourceError(f"ingest source {source.path!r} holds no records{blank}: set ingest.allow_empty: true if "
                          f"an empty source is expected")
    return {"rows_in": rows_in, "rows_kept": kept, "rows_quarantined": sum(dropped.values()),
            "quarantined_by_reason": dict(dropped), "tags": list(source.tags)}


def _feedback_folder(path: str) -> Path:
    if not Path(path).is_dir():
        raise SourceError(f"ingest source {path!r} (kind: feedback) is not a folder: it is where "
                          "`python -m tasks flywheel cut` closes rounds of what `make serve` recorded "
                          f"({Paths.feedback_rounds}); record with serve.record: true, then cut")
    return Path(path)


def ingest(cfg: IngestConfig, out: Path = Paths.ingested, quarantine: Path = Paths.quarantine,
           report: Path = Paths.ingest_report, canaries: list[Canary] = (), offline: bool = True) -> dict:
    """Quarantine entries are `{"index", "line", "id", "reason", "source"}` plus the record: `record`, the JSON value,
    when it parsed; else `raw`, its text, where bytes that are not UTF-8 are lone surrogates (errors="surrogateescape":
    `raw.encode("utf-8", "surrogateescape")` gives the exact bytes back, and the text around them stays readable,
    which base64 would not). The quarantine is written ASCII-only, so those surrogates (and any a record parsed
    to) are \\udcXX escapes and the file itself is valid UTF-8 JSONL. `offline` refuses a hub dataset."""
    # every source it refuses is refused before an output is opened
    feedback = {source.label: Counter() for source in cfg.sources if source.kind == "feedback"}
    readers = [(source, feedback_records(_feedback_folder(source.path), feedback[source.label])
                if source.kind == "feedback" else raw_records(source.path, offline)) for source in cfg.sources]
    many = len(readers) > 1
    with atomic_writer(out) as good, atomic_writer(quarantine) as bad:
        outputs = _Outputs(good, bad, list(canaries))
        by_source = {source.label: _read_source(source, records, cfg, outputs, f"{source.label}/" if many else "")
                     for source, records in readers}
    for label, counts in feedback.items():   # every feedback row by kind, used or not: the round in the report
        by_source[label]["feedback"] = dict(counts)
    reasons = sum((Counter(counts["quarantined_by_reason"]) for counts in by_source.values()), Counter())
    counts = {key: sum(counts[key] for counts in by_source.values()) for key in ("rows_in", "rows_kept")}
    counts |= {"rows_quarantined": reasons.total(), "quarantined_by_reason": dict(reasons),
               "canaries_planted": len(outputs.planted), "canary_rows": outputs.planted, "by_source": by_source}
    for name, part in by_source.items():
        if part["rows_in"] != part["rows_kept"] + part["rows_quarantined"]:
            raise AssertionError(f"ingest counts of source {name} do not reconcile: {part}")
    write_json(report, counts)
    return counts
