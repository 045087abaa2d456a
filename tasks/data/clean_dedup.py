"""The clean stage's global steps as partitioned tasks on the executor: exact dedup, LSH candidates, verification.

datatrove's split of MinHash dedup, on the same executor as the per-range passes. The scan wrote, for every row the
filters kept, its fingerprint into one of `partitions` shares by fingerprint, and its LSH band keys into shares by
key (tasks/data/clean_passes.py). Then:
1. exact: each task reads one fingerprint share of every range, keeps each fingerprint's first row in corpus order;
2. candidates: each task reads one key share, pairs the rows that share a bucket (minhash.bucket_pairs);
3. verify: the candidates' shingle sets, which the fetch pass wrote per range, compared by exact Jaccard in batches;
4. the driver unions the verified edges and keeps one member per cluster (minhash.cluster).
The driver holds only what grows with the duplicates: the dropped rows' refs, the candidate pairs and the verified
edges. `gone` is, per range index, the refs of its rows a global step dropped; later steps and the finish pass skip
them.
"""
from __future__ import annotations

import time

import numpy as np
from tqdm import tqdm

from tasks.config import NearDedupConfig
from tasks.data import scratch
from tasks.data.audit import Audit
from tasks.data.clean_passes import usage
from tasks.data.minhash import NearDupResult, bucket_pairs, cluster, jaccard

Gone = dict[int, set[int]]
VERIFY_BATCH = 4096        # candidate pairs per verification task


def exact_share(p: int, *, work: str, chunks: int, skip: set[str]) -> dict:
    """One fingerprint share: (ref, id, source, id of the first row with that fingerprint) of each later row, and
    the refs of the rows in `skip` (dropped by a corpus filter after the scan), which take no part."""
    clock, first, drops, skipped = time.process_time(), {}, [], []
    for c in range(chunks):                  # ranges in corpus order, each share's rows in order within a range
        part = scratch.get(f"{work}/exact/{p:03d}/{c:06d}")
        for fp, row_ref, row_id, source in zip(part["fingerprint"], part["ref"].tolist(), part["id"], part["source"]):
            if row_id in skip:
                skipped.append(row_ref)
            elif fp in first:
                drops.append((row_ref, row_id, source, first[fp]))
            else:
                first[fp] = row_id
    return {"drops": drops, "skipped": skipped, "usage": usage(clock)}


def band_share(p: int, *, work: str, chunks: int, skip: np.ndarray) -> dict:
    """One band-key share: the candidate pairs (refs) among the rows not dropped so far."""
    clock = time.process_time()
    parts = [scratch.get(f"{work}/bands/{p:03d}/{c:06d}") for c in range(chunks)]
    band, key, refs = (np.concatenate([part[k] for part in parts] or [np.zeros(0, dtype)])
                       for k, dtype in (("band", np.int16), ("key", np.uint64), ("ref", np.int64)))
    alive = ~np.isin(refs, skip)
    pairs = bucket_pairs(band[alive], key[alive], refs[alive])
    return {"pairs": np.array(sorted(pairs), np.int64).reshape(-1, 2), "usage": usage(clock)}


def verify_batch(pairs: np.ndarray, *, work: str, threshold: float) -> dict:
    """Exact Jaccard of each pair, from the shingle sets the fetch pass wrote (each range's file read once per
    worker); id, length and source of the rows in pairs at or above `threshold`."""
    clock = time.process_time()

    def row(r: int) -> tuple:
        return scratch.get_cached(work, f"shingles/{r >> 32:06d}")[r]

    sims = np.array([jaccard(row(a)[0], row(b)[0]) for a, b in pairs.tolist()])
    linked = pairs[sims >= threshold].ravel().tolist()
    return {"sims": sims, "members": {r: row(r)[1:] for r in linked}, "usage": usage(clock)}


def exact_dedup(pool, work: str, chunks: int, partitions: int, skip: set[str], log: Audit, gone: Gone,
                costs) -> None:
    """Step 1, in all shares; the drops are audited in corpus order."""
    drops = []
    for result in tqdm(pool.map(exact_share, range(partitions), work=work, chunks=chunks, skip=skip),
                       total=partitions, desc="clean: exact dedup"):
        costs.task(result["usage"])
        drops += result["drops"]
        for row_ref in result["skipped"]:
            gone.setdefault(row_ref >> 32, set()).add(row_ref)
    for row_ref, row_id, source, first in sorted(drops):
        log.drop(row_id, source, "exact_dedup", "exact_duplicate", duplicate_of=first)
        gone.setdefault(row_ref >> 32, set()).add(row_ref)


def candidates(pool, work: str, chunks: int, partitions: int, gone: Gone, costs) -> set[tuple[int, int]]:
    """Step 2: the LSH candidate pairs of refs, from every share."""
    skip = np.array(sorted(r for refs in gone.values() for r in refs), np.int64)
    pairs: set[tuple[int, int]] = set()
    for result in tqdm(pool.map(band_share, range(partitions), work=work, chunks=chunks, skip=skip),
                       total=partitions, desc="clean: LSH buckets"):
        costs.task(result["usage"])
        pairs.update(map(tuple, result["pairs"].tolist()))
    return pairs


def near_dedup(pool, work: str, pairs: set[tuple[int, int]], cfg: NearDedupConfig, log: Audit, gone: Gone,
               costs) -> NearDupResult:
    """Steps 3 and 4: every candidate verified, clusters formed, one member kept per cluster (cfg.keep)."""
    ordered = np.array(sorted(pairs, key=lambda p: (p[0] >> 32, p[1] >> 32, p)), np.int64).reshape(-1, 2)
    batches = [ordered[i:i + VERIFY_BATCH] for i in range(0, len(ordered), VERIFY_BATCH)]
    sims, members = [], {}
    for batch, result in zip(batches, tqdm(pool.map(verify_batch, batches, work=work, threshold=cfg.threshold),
                                           total=len(batches), desc="clean: verify")):
        costs.task(result["usage"])
        sims += result["sims"].tolist()
        members.update(result["members"])
    edges = [(a, b, sim) for (a, b), sim in zip(ordered.tolist(), sims) if sim >= cfg.threshold]

    def keep_key(r: int) -> tuple:
        return (members[r][1], -r) if cfg.keep == "longest" else (-r,)

    drop, sizes = cluster(edges, keep_key)
    for row_ref, kept_ref, sim in drop:
        row_id, _, source = members[row_ref]
        log.drop(row_id, source, "near_dedup", "near_duplicate", duplicate_of=members[kept_ref][0],
                 jaccard=round(sim, 4))
        gone.setdefault(row_ref >> 32, set()).add(row_ref)
    return NearDupResult(drop, sims, sizes)
