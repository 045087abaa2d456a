"""Exact and near-duplicate detection.

Near-dedup uses datasketch's MinHash + MinHashLSH (the field's library; fast enough for the embedded corpus) and
then verifies every LSH candidate by exact Jaccard on the shingle sets, because LSH returns candidates, not answers.
Verified pairs are merged into clusters (union-find); each cluster keeps its longest member.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH
from tqdm import tqdm

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """What counts as 'the same text' for exact dedup: NFKC, case-folded, whitespace collapsed."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def fingerprint(text: str) -> str:
    return hashlib.blake2b(normalise(text).encode(), digest_size=16).hexdigest()


def shingle_hashes(text: str, n: int) -> np.ndarray:
    """Sorted unique 32-bit hashes of word n-grams (32 bits: datasketch's default affine32 scheme). blake2b, not
    `hash()`, so signatures are the same in every process."""
    words = normalise(text).split(" ")
    grams = {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}
    return np.unique(np.fromiter(
        (int.from_bytes(hashlib.blake2b(g.encode(), digest_size=4).digest(), "little") for g in grams),
        dtype=np.uint32, count=len(grams)))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


@dataclass
class NearDuplicate:
    index: int        # the dropped document
    kept: int         # the cluster member kept in its place
    jaccard: float    # verified similarity of the pair that linked it into the cluster


def _identity(x):
    return x


def near_duplicates(texts: list[str], threshold: float, num_perm: int,
                    n: int) -> tuple[list[NearDuplicate], list[float]]:
    """Documents to drop, and the verified Jaccard of every LSH candidate pair (for the report's histogram)."""
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    shingles, parent, link_sim, candidate_sims = [], list(range(len(texts))), {}, []

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, text in enumerate(tqdm(texts, desc="minhash-lsh", unit="doc")):
        sh = shingle_hashes(text, n)
        shingles.append(sh)
        mh = MinHash(num_perm=num_perm, hashfunc=_identity)
        mh.update_batch(sh.tolist())
        for j in lsh.query(mh):
            sim = jaccard(sh, shingles[j])
            candidate_sims.append(sim)
            if sim >= threshold:
                parent[root(i)] = root(j)
                link_sim[i] = max(link_sim.get(i, 0.0), sim)
        lsh.insert(i, mh)

    clusters: dict[int, list[int]] = {}
    for i in range(len(texts)):
        clusters.setdefault(root(i), []).append(i)
    dropped = []
    for members in clusters.values():
        if len(members) > 1:
            keep = max(members, key=lambda k: (len(texts[k]), -k))
            dropped += [NearDuplicate(k, keep, link_sim.get(k, link_sim.get(keep, threshold)))
                        for k in members if k != keep]
    return sorted(dropped, key=lambda d: d.index), candidate_sims
