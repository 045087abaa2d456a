"""The clean stage's work on one byte range of the corpus, run on the executor's workers: scan, fetch, finish.

Each pass reads its range again (the corpus is streamed, never held in memory) through `read`, so all three see the
same rows. What comes back to the driver is small: verdicts, fingerprints, signatures, candidates' shingle sets,
held-out texts, and the kept rows of one range at a time.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from tasks.common.jsonl import read_jsonl_range
from tasks.config import CleanConfig
from tasks.data import dedup
from tasks.data.decontaminate import Decontaminator, conversation_text
from tasks.data.filters import chain
from tasks.data.filters.base import CorpusFilter, Filter
from tasks.data.filters.quality import trim_leading_replies
from tasks.data.minhash import ShingleHasher, chunk_signatures, shingle_sets
from tasks.data.pii import Scrubber
from tasks.data.split import in_test_split

Range = tuple[int, int]
UNNAMED = "unnamed"        # the source of a row that names none (a corpus not written by ingest)


def source(row: dict) -> str:
    return row.get("source", UNNAMED)


def read(src: str, byte_range: Range, cfg: CleanConfig) -> Iterator[tuple[dict, int]]:
    """The rows of one range as every pass sees them: (row, how many leading replies were trimmed off). Trimming is
    the quality filter's (its setting, its audit stage), done on reading so that every pass trims alike."""
    trim = "quality" in cfg.filters and cfg.quality.trim_leading_replies
    for row in read_jsonl_range(src, *byte_range):
        trimmed = 0
        if trim:
            row["messages"], trimmed = trim_leading_replies(row["messages"])
        yield row, trimmed


def scan(byte_range: Range, *, cfg: CleanConfig, src: str, filters: list[Filter | CorpusFilter]) -> dict:
    """The filters in config order (filters/chain.py); every row's source; for the rows they keep, an exact-dedup
    fingerprint, a MinHash signature and the length."""
    rows, trimmed = [], []
    for row, n_trimmed in read(src, byte_range, cfg):
        rows.append(row)
        if n_trimmed:
            trimmed.append((row["id"], n_trimmed))
    verdicts = chain.run(filters, [r["id"] for r in rows], [r["messages"] for r in rows])
    kept = [rows[i] for i in verdicts.kept]
    texts = [conversation_text(row["messages"]) for row in kept]
    return {"rows": len(rows), "sources": {row["id"]: source(row) for row in rows}, "trimmed": trimmed,
            "verdicts": verdicts, "ids": [row["id"] for row in kept],
            "fingerprints": [dedup.fingerprint(t) for t in texts], "lengths": [len(t) for t in texts],
            "signatures": chunk_signatures(texts, ShingleHasher.configured(cfg.near_dedup), cfg.near_dedup.num_perm)}


def fetch(item: tuple[Range, set[str], set[str]], *, cfg: CleanConfig, src: str) -> tuple[dict, dict]:
    """The shingle sets of the near-dup candidates in this range, and the texts of its held-out rows."""
    byte_range, want_shingles, want_texts = item
    texts = {row["id"]: conversation_text(row["messages"]) for row, _ in read(src, byte_range, cfg)
             if row["id"] in want_shingles or row["id"] in want_texts}
    ids = [i for i in texts if i in want_shingles]
    sets = shingle_sets([texts[i] for i in ids], ShingleHasher.configured(cfg.near_dedup))
    return dict(zip(ids, sets)), {i: t for i, t in texts.items() if i in want_texts}


def finish(item: tuple[Range, set[str]], *, cfg: CleanConfig, src: str, held_out_fraction: float,
           decontaminator: Decontaminator | None) -> dict:
    """The range's rows that no step dropped: training rows decontaminated, then PII scrubbed in every kept row."""
    byte_range, drop = item
    scrubber, kept, dropped, modified = Scrubber(cfg.pii), [], [], []
    for row, _ in read(src, byte_range, cfg):
        if row["id"] in drop:
            continue
        if decontaminator and not in_test_split(row["id"], held_out_fraction):
            score = decontaminator.containment(conversation_text(row["messages"]))
            if score >= cfg.decontamination.min_containment:
                dropped.append((row["id"], "contaminated", {"containment": round(score, 4)}))
                continue
        found: Counter = Counter()
        for m in row["messages"]:
            m["content"], n = scrubber.scrub(m["content"])
            found += n
        if row.get("rejected"):   # a feedback row's worse reply (tasks/data/feedback.py): scrubbed as its replies
            row["rejected"], n = scrubber.scrub(row["rejected"])
            found += n
        if found:
            modified.append((row["id"], dict(found)))
        kept.append(row)
    return {"kept": kept, "dropped": dropped, "modified": modified}
