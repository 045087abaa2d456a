"""MinHash-LSH near-duplicate detection, vectorised across documents.

Own code rather than datasketch because the benchmark (benchmarks/dedup.py) shows why: datasketch computes
`num_perm` hash permutations of every shingle, one document per call, so its cost is O(shingles x num_perm) plus
per-document overhead. Here:
- text is normalised first, a chunk at a time in numpy (tasks/data/dedup.py's Normaliser: case, punctuation incl. CJK
  and full-width, numbers, Unicode forms, accents; NearDedupConfig.normalise), so light edits such as a comma, a
  capital or a full-width mark do not split a pair;
- shingles are n-grams of tokens, words or single CJK characters (a shorter n there: a particle is one character),
  hashed with a rolling polynomial over per-token hashes (numpy, uint64 wrap-around);
- signatures use one-permutation hashing with optimal densification (Li et al. 2012; Shrivastava 2017): each
  shingle is hashed once, its hash picks a bin and a value, each bin keeps its minimum, and empty bins borrow from a
  fixed probe sequence. Two documents agree on a bin with probability equal to their Jaccard similarity, as with
  classic MinHash, at O(shingles) cost, for all documents of a chunk in a few numpy calls;
- banding uses datasketch's (bands, rows) optimiser, weighted towards recall, and buckets are found by sorting;
- every LSH candidate pair is verified by exact Jaccard on the same normalised shingle sets before it counts.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from datasketch.lsh import _optimal_param  # the field's (bands, rows) optimiser
from tqdm import tqdm

from tasks.config import NearDedupConfig, NormaliseConfig
from tasks.data.dedup import Normaliser

_PRIME = np.uint64(0x9E3779B97F4A7C15)   # odd 64-bit multiplier for the rolling n-gram hash
# Words hash to 32 bits (half the memory traffic of 64, the hot loop here): among 10^6 distinct words about 100
# pairs collide, and a collision only matters where both words sit at the same place in two n-grams. Odd, so
# invertible modulo 2^32.
_WORD_PRIME = np.uint32(0x9E3779B1)
_WORD_P_INV = np.uint32(pow(int(_WORD_PRIME), -1, 2**32))
_MIX = np.uint64(0xBF58476D1CE4E5B9)     # splitmix64 constants: spread bits before taking bins
_MIX2 = np.uint64(0x94D049BB133111EB)


def mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: spread the bits of uint64 hashes (shared with the quality filters)."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))



def _powers(base: np.uint32, n: int) -> np.ndarray:
    """base^0 .. base^(n-1) mod 2^32, by doubling in place: log2(n) vectorised multiplies, one allocation."""
    out = np.empty(max(n, 1), dtype=np.uint32)
    out[0], filled, step = 1, 1, base
    with np.errstate(over="ignore"):
        while filled < n:
            take = min(filled, n - filled)
            np.multiply(out[:take], step, out=out[filled:filled + take])
            filled, step = filled + take, step * step
    return out[:n]


class ShingleHasher:
    """Word n-gram hashes for a chunk of documents at once, as one flat array plus per-document offsets.

    No Python loop over words: the chunk's normalised UTF-8 bytes (Normaliser.chunk: whitespace, punctuation and
    control characters are spaces, CJK characters spaced out) are split at spaces, and each word hashed
    polynomially, H(word) = sum b_j P^(e-1-j) = P^(e-1) * (S[e] - S[s]) with S the prefix sum of b_j P^-j (all mod
    2^32; P is odd, hence invertible). Hashes depend on nothing but the text and the normalisation settings:
    identical in every process and run.
    """

    def __init__(self, n: int, normalise: NormaliseConfig, cjk_n: int | None = None):
        self.n, self.cjk_n = n, cjk_n or n
        self.pow, self.pow_inv = _powers(_WORD_PRIME, 1), _powers(_WORD_P_INV, 1)
        self.normaliser = Normaliser(normalise)

    @classmethod
    def configured(cls, cfg: NearDedupConfig) -> ShingleHasher:
        return cls(cfg.shingle_words, cfg.normalise, cfg.shingle_cjk_chars)

    def _grow(self, n: int) -> None:
        if len(self.pow) < n:                      # powers are computed once and reused by every chunk
            size = 1 << (n - 1).bit_length()
            self.pow, self.pow_inv = _powers(_WORD_PRIME, size), _powers(_WORD_P_INV, size)

    def word_ids(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hash of every token of every document, in order; number of tokens per document; whether each token is a
        CJK character). A token is a whitespace-separated word, or a single CJK character: n-grams of tokens are
        character n-grams in Chinese, Japanese or Korean text and word n-grams elsewhere."""
        data, doc_bounds, cjk_at = self.normaliser.chunk(texts)
        self._grow(len(data))
        space = data == ord(" ")                  # data starts and ends with a space: edges alternate start, end
        edges = np.flatnonzero(space[:-1] != space[1:]) + 1
        starts, ends = edges[0::2], edges[1::2]
        with np.errstate(over="ignore"):          # word bytes are > 0x20, so no byte hashes as zero
            prefix = np.zeros(len(data) + 1, dtype=np.uint32)
            np.cumsum(data * self.pow_inv[:len(data)], dtype=np.uint32, out=prefix[1:])
            ids = (self.pow[ends - 1] * (prefix[ends] - prefix[starts])).astype(np.uint64)
        counts = np.diff(np.searchsorted(starts, doc_bounds))
        cjk = np.zeros(len(starts), bool)
        cjk[np.searchsorted(starts, cjk_at)] = True              # every CJK character is a token of its own
        return ids, counts, cjk

    def _rolling(self, ids: np.ndarray, span: int | np.ndarray) -> np.ndarray:
        """h[i] = hash of tokens i..i+span[i]-1, for a span per token or one for all (wrapping across documents:
        masked by the caller)."""
        short, long_ = int(np.min(span)), int(np.max(span))
        h, h_short = ids.copy(), None
        with np.errstate(over="ignore"):
            for k in range(1, long_):
                if k == short:
                    h_short = h.copy()
                h[:-k] = h[:-k] * _PRIME + ids[k:]
        return h if h_short is None else np.where(span == short, h_short, h)

    def chunk(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(shingle hashes of all documents, concatenated; start offset of each document's shingles, plus end). A
        shingle starting at a CJK character spans cjk_n tokens, any other n; a document too short for any is one
        shingle of all its tokens."""
        ids, lengths, cjk = self.word_ids(texts)
        empty = np.flatnonzero(lengths == 0)
        if empty.size:                             # an empty document is one empty word, like "".split() -> [""]
            at = np.r_[0, np.cumsum(lengths)][empty]
            ids, cjk = np.insert(ids, at, np.uint64(0)), np.insert(cjk, at, False)
            lengths = lengths.copy()
            lengths[empty] = 1
        word_start = np.r_[0, np.cumsum(lengths)]
        span = np.where(cjk, self.cjk_n, self.n) if self.cjk_n != self.n and cjk.any() else self.n
        h = self._rolling(ids, span)
        keep = np.arange(len(ids)) + span <= np.repeat(word_start[1:], lengths)    # ends inside its document
        kept = np.r_[0, np.cumsum(keep)]
        counts = kept[word_start[1:]] - kept[word_start[:-1]]
        for d in np.flatnonzero(counts == 0):      # rare: redo its one shingle without the wrap
            v = np.uint64(0)
            with np.errstate(over="ignore"):
                for x in ids[word_start[d]:word_start[d + 1]]:
                    v = v * _PRIME + x
            h[word_start[d]], keep[word_start[d]], counts[d] = v, True, 1
        return mix(h[keep]), np.r_[0, np.cumsum(counts)]

    def __call__(self, text: str) -> np.ndarray:
        """The sorted unique shingle hashes of one document (the set that exact Jaccard compares)."""
        flat, _ = self.chunk([text])
        return np.unique(flat)


def shingle_strings(normalised: str, hasher: ShingleHasher) -> set[str]:
    """One document's shingles as strings (tokens joined by a space), from Normaliser.texts: the sets ShingleHasher
    hashes, in plain Python, for libraries that take strings (datasketch in benchmarks/dedup.py) and for tests."""
    tokens = normalised.split()
    if normalised.isascii():
        spans = [hasher.n] * len(tokens)
    else:
        spans = [hasher.cjk_n if hasher.normaliser.is_cjk(t) else hasher.n for t in tokens]
    shingles = {" ".join(tokens[i:i + s]) for i, s in enumerate(spans) if i + s <= len(tokens)}
    return shingles or {" ".join(tokens)}


def signatures(flat: np.ndarray, offsets: np.ndarray, num_perm: int) -> np.ndarray:
    """(documents, num_perm) uint32 one-permutation MinHash signatures with optimal densification, for documents
    whose shingle hashes are flat[offsets[d]:offsets[d + 1]] (duplicates allowed: a minimum ignores them)."""
    if num_perm & (num_perm - 1):
        raise ValueError("num_perm must be a power of two")
    lengths = np.diff(offsets)
    doc = np.repeat(np.arange(len(lengths)), lengths)
    bits = num_perm.bit_length() - 1
    bins = (flat & np.uint64(num_perm - 1)).astype(np.int64)
    values = (flat >> np.uint64(32)).astype(np.uint32)
    empty = np.iinfo(np.uint32).max
    sig = np.full((len(lengths), num_perm), empty, dtype=np.uint32)
    np.minimum.at(sig, (doc, bins), values)
    original, holes = sig.copy(), np.nonzero(sig == empty)
    attempt = 0
    with np.errstate(over="ignore"):
        while holes[0].size and attempt < 10 * num_perm:   # each empty bin copies the first filled bin of its own
            attempt += 1                                      # probe sequence (the same for every document)
            probe = mix(holes[1].astype(np.uint64) * np.uint64(1 << 20) + np.uint64(attempt))
            source = (probe >> np.uint64(64 - bits)).astype(np.int64)
            found = original[holes[0], source]               # borrow only from bins that shingles filled
            filled = found != empty
            sig[holes[0][filled], holes[1][filled]] = found[filled]
            holes = (holes[0][~filled], holes[1][~filled])
    return sig


def bands_for(threshold: float, num_perm: int) -> tuple[int, int]:
    """datasketch's (bands, rows) optimiser, weighted 0.2 false positives / 0.8 false negatives: every candidate is
    verified by exact Jaccard (cheap), so extra candidates cost little while a missed pair is a kept duplicate.
    At 0.8 with 128 bins: 12 x 10 (finds a J=0.8 pair 74% of the time) instead of the even weighting's 9 x 13 (40%)."""
    return _optimal_param(threshold, num_perm, 0.2, 0.8)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(documents, bands) uint64: each band's `rows` signature values hashed into one bucket key."""
    weights = mix(np.arange(1, rows + 1, dtype=np.uint64))
    keys = np.empty((len(sig), bands), np.uint64)
    for band in range(bands):
        block = sig[:, band * rows:(band + 1) * rows].astype(np.uint64)
        with np.errstate(over="ignore"):
            keys[:, band] = mix((block * weights).sum(axis=1, dtype=np.uint64))
    return keys


def bucket_pairs(band: np.ndarray, key: np.ndarray, doc: np.ndarray, max_bucket: int = 64) -> set[tuple[int, int]]:
    """Pairs of documents that share a bucket (the same key in the same band), from one entry per (document, band):
    any subset of the entries whose buckets are whole, so a partition of the buckets can be paired on its own. A
    bucket of up to `max_bucket` members yields all its pairs; a larger one (a big cluster of copies) pairs each
    member with its first, which still links the whole cluster. Pairs are (smaller doc, larger doc)."""
    order = np.lexsort((doc, key, band))
    band, key, doc = band[order], key[order], doc[order]
    bounds = np.flatnonzero(np.r_[True, (band[1:] != band[:-1]) | (key[1:] != key[:-1]), True])
    shared = np.diff(bounds) >= 2
    pairs: set[tuple[int, int]] = set()
    for start, stop in zip(bounds[:-1][shared].tolist(), bounds[1:][shared].tolist()):
        members = doc[start:stop].tolist()
        if len(members) <= max_bucket:
            pairs.update(itertools.combinations(members, 2))
        else:
            pairs.update((members[0], m) for m in members[1:])
    return pairs


def candidate_pairs(sig: np.ndarray, bands: int, rows: int, max_bucket: int = 64) -> set[tuple[int, int]]:
    """Pairs of documents (row indices of `sig`) that share at least one band's bucket, in memory."""
    n = len(sig)
    return bucket_pairs(np.repeat(np.arange(bands), n), band_keys(sig, bands, rows).T.ravel(),
                        np.tile(np.arange(n), bands), max_bucket)


def byte_chunks(texts: Sequence[str], max_chars: int = 1 << 21) -> list[tuple[int, int]]:
    """[start, end) ranges of about `max_chars` of text each: arrays stay small, and fresh large allocations
    (page faults) cost more than the hashing on a small VM."""
    ranges, start, size = [], 0, 0
    for i, text in enumerate(texts):
        size += len(text) + 1
        if size >= max_chars:
            ranges.append((start, i + 1))
            start, size = i + 1, 0
    if start < len(texts):
        ranges.append((start, len(texts)))
    return ranges


def chunk_signatures(texts: Sequence[str], hasher: ShingleHasher, num_perm: int) -> np.ndarray:
    """Signatures of many documents, hashed a byte-bounded chunk at a time."""
    sigs = [signatures(*hasher.chunk(texts[start:end]), num_perm) for start, end in byte_chunks(texts)]
    return np.concatenate(sigs) if sigs else np.zeros((0, num_perm), np.uint32)


def shingle_sets(texts: Sequence[str], hasher: ShingleHasher) -> list[np.ndarray]:
    """The sorted unique shingle hashes of each document: the sets that exact Jaccard compares."""
    sets = []
    for start, end in byte_chunks(texts):
        flat, offsets = hasher.chunk(texts[start:end])
        sets += [np.unique(flat[a:b]) for a, b in itertools.pairwise(offsets)]
    return sets


@dataclass
class NearDupResult:
    drop: list[tuple[int, int, float]]   # (dropped index, kept index, verified Jaccard that linked it)
    candidate_jaccards: list[float]      # every LSH candidate's verified Jaccard, for the report's histogram
    cluster_sizes: list[int]             # size of every cluster of two or more near-duplicates


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique shingle-hash arrays."""
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def cluster(edges: list[tuple[int, int, float]], keep_key: Callable[[int], tuple]
            ) -> tuple[list[tuple[int, int, float]], list[int]]:
    """Union-find over the verified edges (a, b, Jaccard at or above the threshold); in each cluster the member with
    the largest `keep_key` (the policy: longest, first, ...) stays. (dropped, kept, the best Jaccard that linked the
    dropped one) sorted, and every cluster's size."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        parent.setdefault(i, i)
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    link: dict[int, float] = {}
    for a, b, sim in edges:
        parent[root(b)] = root(a)
        link[a], link[b] = max(link.get(a, 0.0), sim), max(link.get(b, 0.0), sim)
    clusters: dict[int, list[int]] = {}
    for i in list(parent):
        clusters.setdefault(root(i), []).append(i)
    drop, sizes = [], []
    for members in clusters.values():
        if len(members) > 1:
            keep = max(members, key=keep_key)
            sizes.append(len(members))
            drop += [(k, keep, link[k]) for k in members if k != keep]
    return sorted(drop), sizes


def verify_and_cluster(pairs: set[tuple[int, int]], shingle_set: Callable[[int], np.ndarray], threshold: float,
                       keep_key: Callable[[int], tuple]) -> NearDupResult:
    """Exact Jaccard on every candidate pair, then `cluster` over the pairs at or above `threshold`."""
    sims = [(a, b, jaccard(shingle_set(a), shingle_set(b))) for a, b in sorted(pairs)]
    drop, sizes = cluster([e for e in sims if e[2] >= threshold], keep_key)
    return NearDupResult(drop, [sim for _, _, sim in sims], sizes)


def find_near_duplicates(texts: Sequence[str], cfg: NearDedupConfig) -> NearDupResult:
    """In memory, for texts that fit: keeps each chunk's shingle hashes so candidates are not hashed twice.
    The clean stage streams instead (tasks/data/clean.py) and re-hashes only the candidates."""
    hasher, flats, sigs = ShingleHasher.configured(cfg), [], []
    ranges = byte_chunks(texts)
    for start, end in tqdm(ranges, desc="minhash", unit="chunk"):
        flat, offsets = hasher.chunk(texts[start:end])
        flats.append((flat, offsets))
        sigs.append(signatures(flat, offsets, cfg.num_perm))
    sig = np.concatenate(sigs) if sigs else np.zeros((0, cfg.num_perm), np.uint32)
    chunk_of = np.repeat(np.arange(len(ranges)), [end - start for start, end in ranges])
    cache: dict[int, np.ndarray] = {}

    def shingle_set(d: int) -> np.ndarray:
        if d not in cache:
            flat, offsets = flats[chunk_of[d]]
            local = d - ranges[chunk_of[d]][0]
            cache[d] = np.unique(flat[offsets[local]:offsets[local + 1]])
        return cache[d]

    pairs = candidate_pairs(sig, *bands_for(cfg.threshold, cfg.num_perm))
    keep_key = (lambda k: (len(texts[k]), -k)) if cfg.keep == "longest" else (lambda k: (-k,))
    return verify_and_cluster(pairs, shingle_set, cfg.threshold, keep_key)
