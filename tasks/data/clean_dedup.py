"""The clean stage's global passes over the scan's results, in the driver: exact dedup, then near dedup.

Only fingerprints and signatures (512 bytes a row at 128 permutations), the candidates' shingle sets and the held-out
texts ever sit in the driver. `dropped` is, per range, the ids of its rows that some step has dropped: each step adds
the rows it drops, and the finish pass skips them all.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from tasks.config import CleanConfig, NearDedupConfig
from tasks.data import clean_passes
from tasks.data.audit import Audit
from tasks.data.minhash import NearDupResult, bands_for, candidate_pairs, verify_and_cluster
from tasks.data.split import in_test_split

Unique = list[tuple[int, str, int]]   # the rows exact dedup kept, in corpus order: (range index, id, length)


def exact_dedup(scans: list[dict], num_perm: int, log: Audit, dropped: list[set[str]]) -> tuple[Unique, np.ndarray]:
    """First occurrence of each fingerprint kept. The rows kept and their signatures."""
    first_seen, unique, sigs = {}, [], []
    for c, scan in enumerate(scans):
        keep = np.zeros(len(scan["ids"]), bool)
        for k, (row_id, fp, length) in enumerate(zip(scan["ids"], scan["fingerprints"], scan["lengths"])):
            if row_id in dropped[c]:         # by a corpus filter, once the scan was over
                continue
            if fp in first_seen:
                log.drop(row_id, "exact_dedup", "exact_duplicate", duplicate_of=first_seen[fp])
                dropped[c].add(row_id)
            else:
                first_seen[fp] = row_id
                unique.append((c, row_id, length))
                keep[k] = True
        sigs.append(scan["signatures"][keep])
    return unique, np.concatenate(sigs) if sigs else np.zeros((0, num_perm), np.uint32)


def candidates(sig: np.ndarray, cfg: NearDedupConfig) -> set[tuple[int, int]]:
    """LSH candidate pairs (indices into the unique rows) from their signatures."""
    return candidate_pairs(sig, *bands_for(cfg.threshold, cfg.num_perm))


def fetch(pool, cfg: CleanConfig, src: str, ranges: list, unique: Unique, pairs: set[tuple[int, int]],
          held_out_fraction: float) -> tuple[dict, dict]:
    """One pass over the ranges that hold a candidate (its shingle set) or a held-out row (its text, for the
    decontamination index): by id, the shingle sets and the held-out texts."""
    want = [(set(), set()) for _ in ranges]
    for i in {i for pair in pairs for i in pair}:
        want[unique[i][0]][0].add(unique[i][1])
    if cfg.decontamination.held_out:
        for c, row_id, _ in unique:
            if in_test_split(row_id, held_out_fraction):
                want[c][1].add(row_id)
    todo = [(ranges[c], *w) for c, w in enumerate(want) if w[0] or w[1]]
    shingles, held_out = {}, {}
    for sets, texts in tqdm(pool.map(clean_passes.fetch, todo, cfg=cfg, src=src), total=len(todo),
                            desc="clean: fetch"):
        shingles.update(sets)
        held_out.update(texts)
    return shingles, held_out


def near_dedup(pairs: set[tuple[int, int]], shingles: dict, unique: Unique, cfg: NearDedupConfig, log: Audit,
               dropped: list[set[str]]) -> NearDupResult:
    """Exact Jaccard on every candidate, clusters, one member kept per cluster (cfg.keep)."""
    def keep_key(k: int) -> tuple:
        return (unique[k][2], -k) if cfg.keep == "longest" else (-k,)

    near = verify_and_cluster(pairs, lambda k: shingles[unique[k][1]], cfg.threshold, keep_key)
    for index, kept_index, sim in near.drop:
        c, row_id, _ = unique[index]
        log.drop(row_id, "near_dedup", "near_duplicate", duplicate_of=unique[kept_index][1], jaccard=round(sim, 4))
        dropped[c].add(row_id)
    return near
