"""Stage 3: filters -> exact dedup -> MinHash-LSH near-dedup -> decontamination -> PII scrubbing.

Order is cheapest-first so the costly steps see fewer rows. The corpus is streamed in byte ranges, never held in
memory, and all the work runs on the configured executor (inline, local processes or a Dask cluster:
tasks/data/executor.py) as tasks that leave their results in a scratch folder (tasks/data/scratch.py). The driver
keeps no per-row table: its memory grows with the duplicates found, not with the corpus (benchmarks/scale.py).
1. scan (per range, tasks/data/clean_passes.py): the filters clean.filters lists, in its order
   (tasks/data/filters/); for the rows they keep, fingerprints and LSH band keys, partitioned. Then the corpus
   filters (perplexity) judge their scores, and every filter's drops are audited.
2. exact dedup by fingerprint share; LSH candidates by band-key share; the candidates' shingle sets written (one pass
   over the ranges, which also writes the held-out rows); verified by exact Jaccard in batches and clustered
   (tasks/data/clean_dedup.py).
3. the decontamination index, built on a worker: the held-out rows that survived, and
   clean.decontamination.eval_sets.
4. finish (per range): decontaminate training rows, scrub PII; the driver writes what is kept, in corpus order.
Every dropped or modified row goes to the audit file with its stage and reason (tasks/data/audit.py), and the
report's counts reconcile exactly, in all and for each source the rows name (`by_source`): rows_in = rows_kept +
sum(dropped_by_reason) (tasks/data/clean_report.py). `src` and `out` may be fsspec URLs.
"""
from __future__ import annotations

import json
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

from tqdm import tqdm

from tasks.common.jsonl import atomic_writer, byte_ranges
from tasks.config import CleanConfig
from tasks.data import clean_passes, clean_report, filters, scratch
from tasks.data.audit import Audit
from tasks.data.clean_dedup import Gone, candidates, exact_dedup, near_dedup
from tasks.data.clean_passes import usage
from tasks.data.decontaminate import Decontaminator, eval_texts_from
from tasks.data.executor import open_executor
from tasks.data.filters import chain
from tasks.data.filters.base import CorpusFilter
from tasks.paths import Paths


class _Costs:
    """Wall and CPU seconds per step (the driver's and every task's), and peak memory per process, for the report."""

    def __init__(self):
        self.seconds, self.cpu, self.workers, self.task_cpu = {}, {}, {}, 0.0
        self.clock, self.driver_cpu, self.me = time.perf_counter(), time.process_time(), usage(0)["process"]
        self.own_peak = _reset_peak_rss()

    def task(self, cost: dict) -> None:
        if cost["process"] == self.me:       # inline: already in the driver's own CPU time
            return
        self.task_cpu += cost["cpu_s"]
        worker = self.workers.setdefault(cost["process"], {"peak_rss_mb": 0.0, "cpu_s": 0.0, "tasks": 0})
        worker["peak_rss_mb"] = max(worker["peak_rss_mb"], round(cost["peak_rss_mb"], 1))
        worker["cpu_s"], worker["tasks"] = round(worker["cpu_s"] + cost["cpu_s"], 2), worker["tasks"] + 1

    def __call__(self, step: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.seconds[step], self.cpu[step] = now - self.clock, cpu - self.driver_cpu + self.task_cpu
        self.clock, self.driver_cpu, self.task_cpu = now, cpu, 0.0

    def processes(self) -> dict[str, dict]:
        peak = _peak_rss_kb() if self.own_peak else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        driver = {"peak_rss_mb": round(peak / 1024, 1)}
        return {"driver": driver, **{f"worker {name}": w for name, w in sorted(self.workers.items())}}


def _reset_peak_rss() -> bool:
    """Start this process's peak-memory mark afresh (Linux: clear_refs 5), so the driver's figure is the stage's own
    even when it runs in a process that did other work first (the flow). False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _peak_rss_kb() > 0
    except OSError:
        return False


def _peak_rss_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(next((line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")), 0))


def scan(pool, cfg: CleanConfig, src: str, ranges: list, active: list, work: str, log: Audit, costs: _Costs
         ) -> tuple[Counter, set[str], dict[str, list[float]]]:
    """Step 1. Rows read by source, the ids a corpus filter dropped, and the corpus filters' scores. Without a
    corpus filter each range's drops are audited as it comes in; with one, its scores of every row are needed."""
    rows_in, held, source_of, in_scan = Counter(), [], {}, Counter()
    corpus = any(isinstance(f, CorpusFilter) for f in active)
    for s in tqdm(pool.map(clean_passes.scan, list(enumerate(ranges)), cfg=cfg, src=src, filters=active, work=work,
                           partitions=cfg.executor.partitions), total=len(ranges), desc="clean: scan"):
        costs.task(s["usage"])
        rows_in.update(s["rows"])
        for row_id, turns in s["trimmed"]:
            log.trimmed(row_id, turns)
        if corpus:
            held.append(s["verdicts"])
            source_of.update(s["source_of"])
        else:
            _audit(chain.settle(active, [s["verdicts"]])[0], s["source_of"], log)
        for f in active:   # summed over the workers
            in_scan[f"{f.name}_cpu_in_scan"] += s["verdicts"].seconds[f.name]
    settled, scores = chain.settle(active, held)
    _audit(settled, source_of, log)
    costs("scan")
    costs.seconds.update(in_scan)
    late = {row_id for drops in settled for row_id, stage, _ in drops if stage in scores}
    return rows_in, late, scores


def _audit(settled: list, source_of: dict[str, str], log: Audit) -> None:
    for drops in settled:
        for row_id, stage, drop in drops:
            log.drop(row_id, source_of[row_id], stage, drop.reason, **drop.detail)


def fetch(pool, cfg: CleanConfig, src: str, ranges: list, work: str, pairs: set[tuple[int, int]], gone: Gone,
          held_out_fraction: float, costs: _Costs) -> None:
    """The pass that writes the candidates' shingle sets and the held-out texts: over the ranges that hold either."""
    want: dict[int, set[int]] = {}
    for r in {r for pair in pairs for r in pair}:
        want.setdefault(r >> 32, set()).add(r)
    todo = [(c, ranges[c], want.get(c, set()), gone.get(c, set())) for c in range(len(ranges))
            if c in want or cfg.decontamination.held_out]
    for result in tqdm(pool.map(clean_passes.fetch, todo, cfg=cfg, src=src, work=work,
                                held_out_fraction=held_out_fraction), total=len(todo), desc="clean: fetch"):
        costs.task(result["usage"])


def index_task(_, *, cfg: CleanConfig, work: str, chunks: int, near: set[int]) -> dict:
    """Step 3, on a worker: the decontamination index of the held-out rows that survived near dedup (`near`: the
    refs it dropped) and of clean.decontamination.eval_sets, written to `work`; how many examples it holds."""
    clock = time.process_time()
    held_out = [text for c in range(chunks) if cfg.decontamination.held_out
                for r, text in scratch.get(f"{work}/held_out/{c:06d}") if r not in near]
    eval_texts = held_out + [t for path in cfg.decontamination.eval_sets for t in eval_texts_from(path)]
    if eval_texts:
        scratch.put(f"{work}/decontaminator", Decontaminator(eval_texts, cfg.decontamination))
    return {"examples": len(eval_texts), "usage": usage(clock)}


def finish(pool, cfg: CleanConfig, src: str, ranges: list, work: str, gone: Gone, held_out_fraction: float,
           indexed: bool, log: Audit, out_file, costs: _Costs) -> Counter:
    """Step 4. Writes the kept rows, in corpus order; returns how many, by source."""
    items, rows_kept = [(c, r, gone.get(c, set())) for c, r in enumerate(ranges)], Counter()
    for part in tqdm(pool.map(clean_passes.finish, items, cfg=cfg, src=src, work=work,
                              held_out_fraction=held_out_fraction, indexed=indexed),
                     total=len(items), desc="clean: decontaminate+pii"):
        costs.task(part["usage"])
        for row_id, source, reason, detail in part["dropped"]:
            log.drop(row_id, source, "decontamination", reason, **detail)
        for row_id, pii in part["modified"]:
            log.scrubbed(row_id, pii)
        for row in part["kept"]:
            out_file.write(json.dumps(row, ensure_ascii=False) + "\n")
        rows_kept.update(map(clean_passes.source, part["kept"]))
    return rows_kept


def clean(cfg: CleanConfig, src: str | Path = Paths.ingested, out: str | Path = Paths.clean,
          audit: str | Path = Paths.audit, report: Path = Paths.clean_report, report_md: Path = Paths.clean_report_md,
          plots_dir: Path = Paths.clean_plots, *, held_out_fraction: float) -> dict:
    costs, active, gone = _Costs(), filters.configured(cfg), {}
    work_dir = scratch.Scratch(cfg.executor.scratch or tempfile.gettempdir())
    try:
        src = scratch.reachable(str(Path(src).resolve()) if "://" not in str(src) else str(src), work_dir)
        ranges, work = byte_ranges(src, int(cfg.executor.chunk_mb * 2**20)), work_dir.url
        with open_executor(cfg.executor) as pool, atomic_writer(audit) as audit_file, atomic_writer(out) as out_file:
            log = Audit(audit_file)
            rows_in, late, scores = scan(pool, cfg, src, ranges, active, work, log, costs)
            exact_dedup(pool, work, len(ranges), cfg.executor.partitions, late, log, gone, costs)
            costs("exact_dedup")
            pairs = candidates(pool, work, len(ranges), cfg.executor.partitions, gone, costs)
            costs("lsh_candidates")
            fetch(pool, cfg, src, ranges, work, pairs, gone, held_out_fraction, costs)
            costs("fetch")
            near = near_dedup(pool, work, pairs, cfg.near_dedup, log, gone, costs)
            costs("near_dedup")
            index = next(iter(pool.map(index_task, [0], cfg=cfg, work=work, chunks=len(ranges),
                                       near={r for r, _, _ in near.drop})))
            costs.task(index["usage"])
            costs("decontamination_index")
            kept = finish(pool, cfg, src, ranges, work, gone, held_out_fraction, index["examples"] > 0, log,
                          out_file, costs)
            costs("decontaminate_pii")
    finally:
        work_dir.remove()
    counts = clean_report.summary(cfg, log, near, rows_in=rows_in, kept=kept, eval_examples=index["examples"],
                                  chunks=len(ranges), seconds=costs.seconds, cpu_seconds=costs.cpu,
                                  processes=costs.processes())
    clean_report.write(counts, cfg, near, active, scores, report, report_md, plots_dir)
    return counts
