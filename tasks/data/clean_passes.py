"""The clean stage's work on one byte range of the corpus, run on the executor's workers: scan, fetch, finish.

Each pass reads its range again (the corpus is streamed, never held in memory) through `read`, so all three see the
same rows. A row is named by its ref, `range index << 32 | position in the range`: an int that sorts in corpus order.
What the global steps need from every row (fingerprints, LSH band keys) goes to the scratch folder, partitioned
(tasks/data/clean_dedup.py reads it); what comes back to the driver is small: counts, the filters' drops, and the kept
rows of one range at a time.
"""
from __future__ import annotations

import os
import resource
import socket
import time
from collections import Counter
from collections.abc import Iterator

import numpy as np

from tasks.common.jsonl import read_jsonl_range
from tasks.config import CleanConfig
from tasks.data import dedup, scratch
from tasks.data.decontaminate import Decontaminator, conversation_text
from tasks.data.filters import chain
from tasks.data.filters.base import CorpusFilter, Filter
from tasks.data.filters.quality import trim_leading_replies
from tasks.data.minhash import ShingleHasher, band_keys, bands_for, chunk_signatures, shingle_sets
from tasks.data.pii import Scrubber
from tasks.data.split import in_test_split

Range = tuple[int, int]
UNNAMED = "unnamed"        # the source of a row that names none (a corpus not written by ingest)


def source(row: dict) -> str:
    return row.get("source", UNNAMED)


def ref(c: int, position: int) -> int:
    return c << 32 | position


def usage(cpu_start: float) -> dict:
    """What a task cost the process that ran it, for the report's CPU seconds and peak memory per process."""
    return {"cpu_s": time.process_time() - cpu_start, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            / 1024, "process": f"{socket.gethostname()}:{os.getpid()}"}


def read(src: str, byte_range: Range, cfg: CleanConfig) -> Iterator[tuple[dict, int]]:
    """The rows of one range as every pass sees them: (row, how many leading replies were trimmed off). Trimming is
    the quality filter's (its setting, its audit stage), done on reading so that every pass trims alike."""
    trim = "quality" in cfg.filters and cfg.quality.trim_leading_replies
    for row in read_jsonl_range(src, *byte_range):
        trimmed = 0
        if trim:
            row["messages"], trimmed = trim_leading_replies(row["messages"])
        yield row, trimmed


def _kept(work: str, c: int, byte_range: Range, cfg: CleanConfig, src: str, gone: set[int]) -> Iterator[tuple]:
    """(ref, row) of the range's rows that the scan's filters kept and no global step dropped (`gone`)."""
    kept = set(scratch.get(f"{work}/kept/{c:06d}").tolist())
    for position, (row, _) in enumerate(read(src, byte_range, cfg)):
        if position in kept and ref(c, position) not in gone:
            yield ref(c, position), row


def scan(item: tuple[int, Range], *, cfg: CleanConfig, src: str, filters: list[Filter | CorpusFilter], work: str,
         partitions: int) -> dict:
    """The filters in config order (filters/chain.py). For the rows they keep: the positions, and by partition the
    exact-dedup fingerprints and the LSH band keys (their MinHash signatures banded), written to `work`. Back to the
    driver: rows per source, trimmed rows, the filters' verdicts and the sources of the rows they judged."""
    clock, (c, byte_range) = time.process_time(), item
    rows, trimmed = [], []
    for row, n_trimmed in read(src, byte_range, cfg):
        rows.append(row)
        if n_trimmed:
            trimmed.append((row["id"], n_trimmed))
    verdicts = chain.run(filters, [r["id"] for r in rows], [r["messages"] for r in rows])
    kept = np.array(verdicts.kept, np.int64)
    scratch.put(f"{work}/kept/{c:06d}", kept)
    kept_rows = [rows[i] for i in verdicts.kept]
    texts = [conversation_text(row["messages"]) for row in kept_rows]
    _fingerprint_shares(texts, kept_rows, (c << 32) | kept, f"{work}/exact", c, partitions)
    _band_key_shares(texts, (c << 32) | kept, f"{work}/bands", c, partitions, cfg)
    judged = {row_id for drops in verdicts.dropped.values() for row_id, _ in drops}
    judged |= {row_id for scores in verdicts.scored.values() for row_id, _ in scores}
    return {"rows": Counter(map(source, rows)), "trimmed": trimmed, "verdicts": verdicts._replace(kept=[]),
            "source_of": {row["id"]: source(row) for row in rows if row["id"] in judged}, "usage": usage(clock)}


def _fingerprint_shares(texts: list[str], rows: list[dict], refs: np.ndarray, folder: str, c: int,
                        partitions: int) -> None:
    """Each row's exact-dedup fingerprint, with its ref, id and source, into the share its fingerprint picks."""
    fingerprints = [dedup.fingerprint(t) for t in texts]
    share = np.array([int(fp[:8], 16) % partitions for fp in fingerprints], np.int64)
    for p in range(partitions):
        mine = np.flatnonzero(share == p).tolist()
        scratch.put(f"{folder}/{p:03d}/{c:06d}", {"fingerprint": [fingerprints[k] for k in mine], "ref": refs[mine],
                                                  "id": [rows[k]["id"] for k in mine],
                                                  "source": [source(rows[k]) for k in mine]})


def _band_key_shares(texts: list[str], refs: np.ndarray, folder: str, c: int, partitions: int,
                     cfg: CleanConfig) -> None:
    """Each row's LSH band keys (its MinHash signature, banded), one entry per (row, band), into the share its key
    picks: a bucket lies whole in one share."""
    bands, width = bands_for(cfg.near_dedup.threshold, cfg.near_dedup.num_perm)
    keys = band_keys(chunk_signatures(texts, ShingleHasher.configured(cfg.near_dedup), cfg.near_dedup.num_perm),
                     bands, width)
    band, row = np.repeat(np.arange(bands), len(keys)), np.tile(np.arange(len(keys)), bands)
    key = keys.T.ravel()                                       # band-major, as band and row
    share = (key % np.uint64(partitions)).astype(np.int64)
    for p in range(partitions):
        mine = share == p
        scratch.put(f"{folder}/{p:03d}/{c:06d}", {"band": band[mine].astype(np.int16), "key": key[mine],
                                                  "ref": refs[row[mine]]})


def fetch(item: tuple[int, Range, set[int], set[int]], *, cfg: CleanConfig, src: str, work: str,
          held_out_fraction: float) -> dict:
    """Written to `work`: the shingle sets of the range's near-dup candidates (with id, length and source, for the
    verification), and the texts of its held-out rows that the filters and exact dedup kept (for the
    decontamination index)."""
    clock, (c, byte_range, want, gone) = time.process_time(), item
    candidates, held_out = [], []
    for row_ref, row in _kept(work, c, byte_range, cfg, src, gone):
        if row_ref in want:
            candidates.append((row_ref, row))
        if cfg.decontamination.held_out and in_test_split(row["id"], held_out_fraction):
            held_out.append((row_ref, conversation_text(row["messages"])))
    texts = [conversation_text(row["messages"]) for _, row in candidates]
    sets = shingle_sets(texts, ShingleHasher.configured(cfg.near_dedup))
    scratch.put(f"{work}/shingles/{c:06d}", {row_ref: (s, row["id"], len(t), source(row))
                                             for (row_ref, row), s, t in zip(candidates, sets, texts)})
    if cfg.decontamination.held_out:
        scratch.put(f"{work}/held_out/{c:06d}", held_out)
    return {"held_out": len(held_out), "usage": usage(clock)}


def finish(item: tuple[int, Range, set[int]], *, cfg: CleanConfig, src: str, work: str, held_out_fraction: float,
           indexed: bool) -> dict:
    """The range's rows that no step dropped: training rows decontaminated (the index `decontamination_index`
    wrote, loaded once per worker), then PII scrubbed in every kept row."""
    clock, (c, byte_range, gone) = time.process_time(), item
    decontaminator: Decontaminator | None = scratch.get_cached(work, "decontaminator") if indexed else None
    scrubber, kept, dropped, modified = Scrubber(cfg.pii), [], [], []
    for _, row in _kept(work, c, byte_range, cfg, src, gone):
        if decontaminator and not in_test_split(row["id"], held_out_fraction):
            score = decontaminator.containment(conversation_text(row["messages"]))
            if score >= cfg.decontamination.min_containment:
                dropped.append((row["id"], source(row), "contaminated", {"containment": round(score, 4)}))
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
    return {"kept": kept, "dropped": dropped, "modified": modified, "usage": usage(clock)}
