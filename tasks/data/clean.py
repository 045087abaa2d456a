"""Stage 3: filters -> exact dedup -> MinHash-LSH near-dedup -> decontamination -> PII scrubbing.

Order is cheapest-first so the costly steps see fewer rows. The corpus is streamed in byte ranges, never held in
memory, and the per-range work (tasks/data/clean_passes.py) runs on the configured executor (inline, local processes
or Dask: tasks/data/executor.py); the global steps run here, in the driver:
1. scan (per range): the filters clean.filters lists, in its order (tasks/data/filters/); for the rows they keep an
   exact-dedup fingerprint, a MinHash signature and the length. Then the corpus filters (perplexity) judge their
   scores, and every filter's drops are audited.
2. exact dedup by fingerprint; near dedup: LSH candidates, their shingle sets fetched (one pass over the ranges
   that hold them, which also fetches the held-out rows), verified by exact Jaccard and clustered
   (tasks/data/clean_dedup.py).
3. the decontamination index: the held-out rows that survived, and clean.decontamination.eval_sets.
4. finish (per range): decontaminate training rows, scrub PII, write what is kept.
Every dropped or modified row goes to the audit file with its stage and reason (tasks/data/audit.py), and the
report's counts reconcile exactly, in all and for each source the rows name (`by_source`): rows_in = rows_kept +
sum(dropped_by_reason) (tasks/data/clean_report.py).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from tasks.common.jsonl import atomic_writer, byte_ranges
from tasks.config import CleanConfig
from tasks.data import clean_passes, clean_report, filters
from tasks.data.audit import Audit
from tasks.data.clean_dedup import candidates, exact_dedup, fetch, near_dedup
from tasks.data.decontaminate import Decontaminator, eval_texts_from
from tasks.data.executor import open_executor
from tasks.data.filters import chain
from tasks.paths import Paths


class _Laps:
    """Seconds per step, for the report."""

    def __init__(self):
        self.seconds, self.clock = {}, time.perf_counter()

    def __call__(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step], self.clock = now - self.clock, now


def scan(pool, cfg: CleanConfig, src: str, ranges: list, active: list, log: Audit, laps: _Laps
         ) -> tuple[list[dict], list[set[str]], dict[str, list[float]]]:
    """Step 1. The scans, the ids each range's filters dropped, and the corpus filters' scores."""
    scans = list(tqdm(pool.map(clean_passes.scan, ranges, cfg=cfg, src=src, filters=active), total=len(ranges),
                      desc="clean: scan"))
    settled, scores = chain.settle(active, [s["verdicts"] for s in scans])
    for s, drops in zip(scans, settled):
        for row_id, turns in s["trimmed"]:
            log.trimmed(row_id, turns)
        for row_id, stage, drop in drops:
            log.drop(row_id, stage, drop.reason, **drop.detail)
    laps("scan")
    for f in active:   # summed over the workers
        laps.seconds[f"{f.name}_cpu_in_scan"] = sum(s["verdicts"].seconds[f.name] for s in scans)
    return scans, [{row_id for row_id, _, _ in drops} for drops in settled], scores


def decontamination_index(cfg: CleanConfig, held_out: list[str]) -> tuple[Decontaminator | None, int]:
    """Step 3. The index of every evaluation example, and how many there are."""
    eval_texts = held_out + [t for path in cfg.decontamination.eval_sets for t in eval_texts_from(path)]
    return (Decontaminator(eval_texts, cfg.decontamination) if eval_texts else None), len(eval_texts)


def finish(pool, cfg: CleanConfig, src: str, ranges: list, dropped: list[set[str]], held_out_fraction: float,
           decontaminator: Decontaminator | None, log: Audit, out_file) -> Counter:
    """Step 4. Writes the kept rows, in corpus order; returns how many, by source."""
    items, rows_kept = list(zip(ranges, dropped)), Counter()
    for part in tqdm(pool.map(clean_passes.finish, items, cfg=cfg, src=src, held_out_fraction=held_out_fraction,
                              decontaminator=decontaminator), total=len(items), desc="clean: decontaminate+pii"):
        for row_id, reason, detail in part["dropped"]:
            log.drop(row_id, "decontamination", reason, **detail)
        for row_id, pii in part["modified"]:
            log.scrubbed(row_id, pii)
        for row in part["kept"]:
            out_file.write(json.dumps(row, ensure_ascii=False) + "\n")
        rows_kept.update(map(clean_passes.source, part["kept"]))
    return rows_kept


def clean(cfg: CleanConfig, src: Path = Paths.ingested, out: Path = Paths.clean, audit: Path = Paths.audit,
          report: Path = Paths.clean_report, report_md: Path = Paths.clean_report_md,
          plots_dir: Path = Paths.clean_plots, *, held_out_fraction: float) -> dict:
    src, laps, active = str(Path(src).resolve()), _Laps(), filters.configured(cfg)
    ranges = byte_ranges(src, int(cfg.executor.chunk_mb * 2**20))
    with open_executor(cfg.executor) as pool, atomic_writer(audit) as audit_file, atomic_writer(out) as out_file:
        log = Audit(audit_file)
        scans, dropped, scores = scan(pool, cfg, src, ranges, active, log, laps)
        rows_in = sum(s["rows"] for s in scans)
        source_of = {row_id: name for s in scans for row_id, name in s["sources"].items()}
        unique, sig = exact_dedup(scans, cfg.near_dedup.num_perm, log, dropped)
        del scans
        laps("exact_dedup")
        pairs = candidates(sig, cfg.near_dedup)
        shingles, held_out = fetch(pool, cfg, src, ranges, unique, pairs, held_out_fraction)
        near = near_dedup(pairs, shingles, unique, cfg.near_dedup, log, dropped)
        laps("near_dedup")
        gone = set().union(*dropped)
        decontaminator, eval_examples = decontamination_index(
            cfg, [text for row_id, text in held_out.items() if row_id not in gone])
        kept = finish(pool, cfg, src, ranges, dropped, held_out_fraction, decontaminator, log, out_file)
        laps("decontaminate_pii")
    counts = clean_report.summary(cfg, log, near, rows_in=rows_in, kept=kept, source_of=source_of,
                                  eval_examples=eval_examples, chunks=len(ranges), seconds=laps.seconds)
    clean_report.write(counts, cfg, near, active, scores, report, report_md, plots_dir)
    return counts
