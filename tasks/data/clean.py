"""Stage 3: quality and toxicity filters -> exact dedup -> MinHash-LSH near-dedup -> (perplexity filter) ->
decontamination -> PII scrubbing.

Order is cheapest-first so the costly steps see fewer rows. The corpus is streamed in byte ranges, never held in
memory, and the per-row work runs on the configured executor (inline, local processes, or Dask: tasks/data/executor.py):
1. scan (per range): quality filters, then the toxicity filter on their survivors at once; for survivors an exact-dedup fingerprint, a MinHash signature and the length.
2. driver: exact duplicates by fingerprint; LSH candidate pairs from the signatures.
3. fetch (per range, only ranges that hold them): shingle sets of the candidates, texts of held-out rows.
4. driver: exact Jaccard on every candidate, clusters, one kept per cluster; the decontamination index. With
   clean.perplexity on, the survivors are scored in the workers and the tail above the cutoff dropped.
5. finish (per range): decontaminate training rows, scrub PII, return what is kept.
Only signatures (512 bytes a row at 128 permutations), candidates and held-out texts ever sit in the driver.
Every dropped or modified row goes to the audit file with its stage and reason (ids, counts and scores, never raw
text), and the report's counts reconcile exactly: rows_in = rows_kept + sum(dropped_by_reason).
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tasks.common import plots
from tasks.common.jsonl import atomic_writer, byte_ranges, read_jsonl_range, write_json
from tasks.config import CleanConfig
from tasks.data import dedup
from tasks.data.decontaminate import Decontaminator, conversation_text, eval_texts_from
from tasks.data.executor import open_executor
from tasks.data.minhash import (
    NearDupResult,
    ShingleHasher,
    bands_for,
    candidate_pairs,
    chunk_signatures,
    shingle_sets,
    verify_and_cluster,
)
from tasks.data.perplexity import cutoff, reply_perplexities
from tasks.data.pii import Scrubber
from tasks.data.quality import quality_reason, trim_leading_replies
from tasks.data.split import in_test_split
from tasks.data.toxicity import toxic_replies
from tasks.paths import Paths


def _rows(src: str, byte_range: tuple[int, int], cfg: CleanConfig) -> Iterator[tuple[dict, int]]:
    """The rows of one range as every pass sees them: (row, how many leading replies were trimmed off)."""
    for row in read_jsonl_range(src, *byte_range):
        trimmed = 0
        if cfg.quality.trim_leading_replies:
            row["messages"], trimmed = trim_leading_replies(row["messages"])
        yield row, trimmed


def _scan(byte_range: tuple[int, int], *, cfg: CleanConfig, src: str) -> dict:
    rows, dropped, trimmed, survivors = 0, [], [], []
    for row, n_trimmed in _rows(src, byte_range, cfg):
        rows += 1
        if n_trimmed:
            trimmed.append((row["id"], n_trimmed))
        reason = quality_reason(row["messages"], cfg.quality)
        if reason:
            dropped.append((row["id"], "quality", reason, {}))
        else:
            survivors.append(row)
    clock = time.perf_counter()   # the classifier once per chunk: its cost is per call as much as per reply
    toxic = (toxic_replies([r["messages"] for r in survivors], cfg.toxicity) if cfg.toxicity.enabled
             else [None] * len(survivors))
    toxicity_s = time.perf_counter() - clock
    ids, fingerprints, lengths, texts = [], [], [], []
    for row, found in zip(survivors, toxic):
        if found:
            dropped.append((row["id"], "toxicity", found[0], {"score": found[1]}))
            continue
        text = conversation_text(row["messages"])
        ids.append(row["id"])
        fingerprints.append(dedup.fingerprint(text))
        lengths.append(len(text))
        texts.append(text)
    sig = chunk_signatures(texts, ShingleHasher.configured(cfg.near_dedup), cfg.near_dedup.num_perm)
    return {"rows": rows, "dropped": dropped, "trimmed": trimmed, "ids": ids, "fingerprints": fingerprints,
            "lengths": lengths, "signatures": sig, "toxicity_s": toxicity_s}


def _fetch(item: tuple[tuple[int, int], set[str], set[str]], *, cfg: CleanConfig, src: str) -> tuple[dict, dict]:
    byte_range, want_shingles, want_texts = item
    texts = {row["id"]: conversation_text(row["messages"]) for row, _ in _rows(src, byte_range, cfg)
             if row["id"] in want_shingles or row["id"] in want_texts}
    ids = [i for i in texts if i in want_shingles]
    sets = shingle_sets([texts[i] for i in ids], ShingleHasher.configured(cfg.near_dedup))
    return dict(zip(ids, sets)), {i: t for i, t in texts.items() if i in want_texts}


def _finish(item: tuple[tuple[int, int], set[str]], *, cfg: CleanConfig, src: str, held_out_fraction: float,
            decontaminator: Decontaminator | None) -> dict:
    byte_range, drop = item
    scrubber, kept, dropped, modified = Scrubber(cfg.pii), [], [], []
    for row, _ in _rows(src, byte_range, cfg):
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
        if found:
            modified.append((row["id"], dict(found)))
        kept.append(row)
    return {"kept": kept, "dropped": dropped, "modified": modified}


class _Audit:
    """The exclusion file (datatrove-style) and the counts it must agree with."""

    def __init__(self, f):
        self.f, self.dropped, self.pii, self.rows_scrubbed = f, Counter(), Counter(), 0

    def drop(self, row_id: str, stage: str, reason: str, **detail) -> None:
        self.dropped[reason] += 1
        self.f.write(json.dumps({"id": row_id, "action": "dropped", "stage": stage, "reason": reason, **detail}) + "\n")

    def modify(self, row_id: str, stage: str, reason: str, **detail) -> None:
        self.f.write(json.dumps({"id": row_id, "action": "modified", "stage": stage, "reason": reason, **detail})
                     + "\n")

    def scrubbed(self, row_id: str, pii: dict) -> None:
        self.rows_scrubbed += 1
        self.pii.update(pii)
        self.modify(row_id, "pii", "pii_scrubbed", pii=pii)


def _exact_dedup(scans: list[dict], num_perm: int, log: _Audit,
                 drops_in: dict) -> tuple[list[tuple[int, str, int]], np.ndarray]:
    """First occurrence kept. The unique rows as (chunk, id, length) in corpus order, and their signatures."""
    first_seen, unique, sigs = {}, [], []
    for c, scan in enumerate(scans):
        keep = np.zeros(len(scan["ids"]), bool)
        for k, (row_id, fp, length) in enumerate(zip(scan["ids"], scan["fingerprints"], scan["lengths"])):
            if fp in first_seen:
                log.drop(row_id, "exact_dedup", "exact_duplicate", duplicate_of=first_seen[fp])
                drops_in[c].add(row_id)
            else:
                first_seen[fp] = row_id
                unique.append((c, row_id, length))
                keep[k] = True
        sigs.append(scan["signatures"][keep])
    return unique, np.concatenate(sigs) if sigs else np.zeros((0, num_perm), np.uint32)


def _near_dedup(pool, cfg: CleanConfig, src: str, ranges: list, unique: list, sig: np.ndarray,
                held_out_fraction: float, log: _Audit, drops_in: dict) -> tuple[NearDupResult, list[str]]:
    """LSH candidates from the signatures; one pass over the ranges that hold candidates (their shingle sets) or
    held-out rows (their texts, the decontamination set); verified clusters, one member kept. Returns the result
    and the held-out texts that survived."""
    nd = cfg.near_dedup
    pairs = candidate_pairs(sig, *bands_for(nd.threshold, nd.num_perm))
    want = [(set(), set()) for _ in ranges]
    for i in {i for pair in pairs for i in pair}:
        want[unique[i][0]][0].add(unique[i][1])
    if cfg.decontamination.held_out:
        for c, row_id, _ in unique:
            if in_test_split(row_id, held_out_fraction):
                want[c][1].add(row_id)
    todo = [(ranges[c], *w) for c, w in enumerate(want) if w[0] or w[1]]
    shingles, held_out = {}, {}
    for sets, texts in tqdm(pool.map(_fetch, todo, cfg=cfg, src=src), total=len(todo), desc="clean: fetch"):
        shingles.update(sets)
        held_out.update(texts)

    def keep_key(k: int) -> tuple:
        return (unique[k][2], -k) if nd.keep == "longest" else (-k,)

    near = verify_and_cluster(pairs, lambda k: shingles[unique[k][1]], nd.threshold, keep_key)
    for index, kept_index, sim in near.drop:
        c, row_id, _ = unique[index]
        log.drop(row_id, "near_dedup", "near_duplicate", duplicate_of=unique[kept_index][1], jaccard=round(sim, 4))
        drops_in[c].add(row_id)
        held_out.pop(row_id, None)
    return near, list(held_out.values())


def _score(item: tuple[tuple[int, int], set[str]], *, cfg: CleanConfig, src: str) -> list[tuple[str, float]]:
    byte_range, drop = item
    rows = [row for row, _ in _rows(src, byte_range, cfg) if row["id"] not in drop]
    return list(zip([r["id"] for r in rows], reply_perplexities([r["messages"] for r in rows], cfg.perplexity)))


def _perplexity_filter(pool, cfg: CleanConfig, src: str, ranges: list, log: _Audit, drops_in: dict) -> list[float]:
    """The rows every earlier step kept, scored in the workers; the tail above the cutoff dropped. Returns the
    scores (for the histogram)."""
    items = [(r, drops_in[c]) for c, r in enumerate(ranges)]
    parts = list(tqdm(pool.map(_score, items, cfg=cfg, src=src), total=len(items), desc="clean: perplexity"))
    limit = cutoff([s for part in parts for _, s in part], cfg.perplexity)
    for c, part in enumerate(parts):
        for row_id, score in part:
            if score > limit:
                log.drop(row_id, "perplexity", "high_perplexity", perplexity=round(score, 2), cutoff=round(limit, 2))
                drops_in[c].add(row_id)
    return [s for part in parts for _, s in part]


def clean(cfg: CleanConfig, src: Path = Paths.ingested, out: Path = Paths.clean, audit: Path = Paths.audit,
          report: Path = Paths.clean_report, report_md: Path = Paths.clean_report_md,
          plots_dir: Path = Paths.clean_plots, *, held_out_fraction: float) -> dict:
    src, timings = str(Path(src).resolve()), {}
    ranges = byte_ranges(src, int(cfg.executor.chunk_mb * 2**20))
    clock = time.perf_counter()
    with open_executor(cfg.executor) as pool, atomic_writer(audit) as audit_file, atomic_writer(out) as out_file:
        log, scans, drops_in, rows_trimmed = _Audit(audit_file), [], defaultdict(set), 0   # chunk -> dropped ids
        for c, scan in enumerate(tqdm(pool.map(_scan, ranges, cfg=cfg, src=src), total=len(ranges),
                                      desc="clean: scan")):
            scans.append(scan)
            for row_id, n in scan.pop("trimmed"):
                log.modify(row_id, "quality", "leading_replies_trimmed", turns=n)
                rows_trimmed += 1
            for row_id, stage, reason, detail in scan.pop("dropped"):
                log.drop(row_id, stage, reason, **detail)
                drops_in[c].add(row_id)
        rows_in = sum(s["rows"] for s in scans)
        timings["scan"], clock = time.perf_counter() - clock, time.perf_counter()
        timings["toxicity_cpu_in_scan"] = sum(s.pop("toxicity_s") for s in scans)   # summed over workers

        unique, sig = _exact_dedup(scans, cfg.near_dedup.num_perm, log, drops_in)
        del scans
        timings["exact_dedup"], clock = time.perf_counter() - clock, time.perf_counter()
        near, held_out = _near_dedup(pool, cfg, src, ranges, unique, sig, held_out_fraction, log, drops_in)
        del unique, sig
        timings["near_dedup"], clock = time.perf_counter() - clock, time.perf_counter()
        perplexities = _perplexity_filter(pool, cfg, src, ranges, log, drops_in) if cfg.perplexity.enabled else []
        if perplexities:
            timings["perplexity"], clock = time.perf_counter() - clock, time.perf_counter()

        eval_texts = held_out + [t for path in cfg.decontamination.eval_sets for t in eval_texts_from(path)]
        decontaminator = Decontaminator(eval_texts, cfg.decontamination) if eval_texts else None
        items = [(r, drops_in[c]) for c, r in enumerate(ranges)]
        rows_kept = 0
        for part in tqdm(pool.map(_finish, items, cfg=cfg, src=src, held_out_fraction=held_out_fraction,
                                  decontaminator=decontaminator), total=len(items), desc="clean: decontaminate+pii"):
            for row_id, reason, detail in part["dropped"]:
                log.drop(row_id, "decontamination", reason, **detail)
            for row_id, pii in part["modified"]:
                log.scrubbed(row_id, pii)
            for row in part["kept"]:
                out_file.write(json.dumps(row, ensure_ascii=False) + "\n")
            rows_kept += len(part["kept"])
        timings["decontaminate_pii"] = time.perf_counter() - clock

    counts = {"rows_in": rows_in, "rows_kept": rows_kept, "rows_dropped": sum(log.dropped.values()),
              "dropped_by_reason": dict(log.dropped), "rows_leading_replies_trimmed": rows_trimmed,
              "rows_pii_scrubbed": log.rows_scrubbed,
              "pii_by_type": dict(log.pii), "near_dup_candidate_pairs": len(near.candidate_jaccards),
              "near_dup_clusters": len(near.cluster_sizes), "decontamination_eval_examples": len(eval_texts),
              "toxicity": _toxicity_said(cfg.toxicity),
              "executor": f"{cfg.executor.kind} x{cfg.executor.workers}", "chunks": len(ranges),
              "seconds": {k: round(v, 2) for k, v in timings.items()}}
    if counts["rows_in"] != counts["rows_kept"] + counts["rows_dropped"]:
        raise AssertionError(f"clean counts do not reconcile: {counts}")
    write_json(report, counts)
    plots.histogram(near.candidate_jaccards, plots_dir / "jaccard_candidates.png",
                    "Verified Jaccard of LSH candidate pairs", "Jaccard similarity", cfg.near_dedup.threshold)
    plots.bars({str(size): n for size, n in sorted(Counter(near.cluster_sizes).items())},
               plots_dir / "cluster_sizes.png", "Near-duplicate clusters by size (members)", "clusters")
    if perplexities:
        plots.histogram([math.log10(s) for s in perplexities if s == s], plots_dir / "perplexity.png",
                        f"Reply perplexity under {cfg.perplexity.model}", "log10 perplexity", bins_range=None)
    plots.bars(dict(log.pii), plots_dir / "pii_by_type.png", "PII replaced, by type")
    plots.bars(dict(log.dropped), plots_dir / "dropped_by_reason.png", "Rows dropped, by reason", "rows")
    report_md.write_text(_markdown(counts))
    return counts


def _toxicity_said(cfg) -> str:
    if not cfg.enabled:
        return "off"
    terms = "built-in English and Chinese blocklist" + (f" + {cfg.blocklist_file}" if cfg.blocklist_file else "")
    return f"{terms}, alt-profanity-check >= {cfg.threshold}, on {'/'.join(cfg.roles)} messages"


def _markdown(c: dict) -> str:
    lines = ["# Cleaning report", "", f"- rows in: **{c['rows_in']}**", f"- rows kept: **{c['rows_kept']}**",
             f"- rows dropped: **{c['rows_dropped']}**", "", "| dropped because | rows |", "|---|---:|"]
    lines += [f"| {reason} | {n} |" for reason, n in sorted(c["dropped_by_reason"].items())]
    lines += ["", f"Toxicity filter: {c['toxicity']}."]
    lines += ["", f"Leading replies trimmed (chunk opened mid-answer) in {c['rows_leading_replies_trimmed']} rows.",
              "", f"PII scrubbed in {c['rows_pii_scrubbed']} kept conversations:", "", "| type | replaced |",
              "|---|---:|"]
    lines += [f"| {kind} | {n} |" for kind, n in sorted(c["pii_by_type"].items())]
    lines += ["", (f"Near-dedup: {c['near_dup_candidate_pairs']} LSH candidate pairs verified by exact Jaccard, "
                   f"{c['near_dup_clusters']} clusters."),
              f"Decontamination against {c['decontamination_eval_examples']} evaluation examples.",
              f"Ran on {c['executor']} in {c['chunks']} chunks: "
              + ", ".join(f"{k} {v} s" for k, v in c["seconds"].items()) + ".", ""]
    return "\n".join(lines)
