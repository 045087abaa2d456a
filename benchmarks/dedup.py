"""Near-dedup: this project's vectorised MinHash-LSH (tasks/data/minhash.py) vs datasketch, same corpus, same run.

Corpus: 200-word windows of real ShareGPT replies, plus planted near-duplicates with 0-6% of words substituted (true
Jaccard of word 5-grams spans ~0.6-1.0, so pairs sit on both sides of the 0.8 threshold). Ground truth: exact Jaccard
of every planted pair and of every candidate either method proposes; a pair is a true duplicate at Jaccard >= 0.8.
Both methods verify their LSH candidates with the same exact-Jaccard code, and both timings include it.

    .venv/bin/python -m benchmarks.dedup [--docs 20000] [--planted 2000]
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np
from datasketch import MinHash, MinHashLSH

from tasks.data.dedup import normalise
from tasks.data.ingest import _json_array_records, sharegpt_package_file
from tasks.data.minhash import ShingleHasher, bands_for, byte_chunks, candidate_pairs, find_near_duplicates, signatures

THRESHOLD, NUM_PERM, N = 0.8, 128, 5


def corpus(docs: int, planted: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    rng = random.Random(seed)
    windows = []
    for record, reason in _json_array_records(sharegpt_package_file()):
        if reason is None:
            for turn in record.get("conversations", []):
                words = str(turn.get("value", "")).split()
                windows += [" ".join(words[i:i + 200]) for i in range(0, len(words) - 199, 200)]
        if len(windows) >= docs - planted:
            break
    texts = windows[:docs - planted]
    vocab = sorted({w for t in texts[:2000] for w in t.split()})
    pairs = []
    for src in rng.sample(range(len(texts)), planted):
        words = texts[src].split()
        for i in rng.sample(range(len(words)), int(len(words) * rng.uniform(0, 0.06))):
            words[i] = rng.choice(vocab)
        pairs.append((src, len(texts)))
        texts.append(" ".join(words))
    return texts, pairs


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (a.size + b.size - inter)


def run_datasketch(texts: list[str]) -> tuple[set[tuple[int, int]], dict[str, float]]:
    t0 = time.perf_counter()
    shingle_sets = []
    for text in texts:
        words = normalise(text).split(" ")
        shingle_sets.append({" ".join(words[i:i + N]).encode() for i in range(max(1, len(words) - N + 1))})
    t1 = time.perf_counter()
    hashes = []
    for s in shingle_sets:
        m = MinHash(num_perm=NUM_PERM)
        m.update_batch(list(s))
        hashes.append(m)
    t2 = time.perf_counter()
    lsh, pairs = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM), set()
    for i, m in enumerate(hashes):
        pairs.update((j, i) for j in lsh.query(m))
        lsh.insert(i, m)
    t3 = time.perf_counter()
    return pairs, {"shingle": t1 - t0, "signature": t2 - t1, "lsh": t3 - t2}


def run_ours(texts: list[str]) -> tuple[set[tuple[int, int]], dict[str, float]]:
    t0 = time.perf_counter()
    hasher = ShingleHasher(N)
    chunks = [hasher.chunk(texts[start:end]) for start, end in byte_chunks(texts)]
    t1 = time.perf_counter()
    sig = np.concatenate([signatures(flat, offsets, NUM_PERM) for flat, offsets in chunks])
    t2 = time.perf_counter()
    pairs = candidate_pairs(sig, *bands_for(THRESHOLD, NUM_PERM))
    t3 = time.perf_counter()
    return pairs, {"shingle": t1 - t0, "signature": t2 - t1, "lsh": t3 - t2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--planted", type=int, default=2000)
    args = parser.parse_args()
    texts, planted = corpus(args.docs, args.planted)
    hasher = ShingleHasher(N)
    truth_shingles = [hasher(t) for t in texts]

    results = {}
    for name, fn in (("datasketch", run_datasketch), ("this project", run_ours)):
        pairs, times = fn(texts)
        t0 = time.perf_counter()
        verified = {p for p in pairs if exact_jaccard(truth_shingles[p[0]], truth_shingles[p[1]]) >= THRESHOLD}
        times["verify"] = time.perf_counter() - t0
        results[name] = (pairs, verified, times)

    candidates = set(planted).union(*(r[0] for r in results.values()))
    true = {p for p in candidates if exact_jaccard(truth_shingles[p[0]], truth_shingles[p[1]]) >= THRESHOLD}
    t0 = time.perf_counter()
    end_to_end = find_near_duplicates(texts, THRESHOLD, NUM_PERM, N)
    e2e_s = time.perf_counter() - t0

    print(f"\n{len(texts)} docs (~200 words, ShareGPT), {len(planted)} planted variants, {len(true)} true pairs "
          f"(Jaccard >= {THRESHOLD}); num_perm {NUM_PERM}, word {N}-grams, 1 process\n")
    print(f"{'method':<14}{'shingle s':>10}{'sign s':>8}{'lsh s':>7}{'verify s':>9}{'total s':>9}{'docs/s':>9}"
          f"{'cands':>7}{'cand prec':>10}{'precision':>10}{'recall':>8}")
    totals = {}
    for name, (pairs, verified, t) in results.items():
        total = sum(t.values())
        totals[name] = total
        cand_prec = len(pairs & true) / max(1, len(pairs))
        print(f"{name:<14}{t['shingle']:>10.2f}{t['signature']:>8.2f}{t['lsh']:>7.2f}{t['verify']:>9.2f}"
              f"{total:>9.2f}{len(texts) / total:>9.0f}{len(pairs):>7}{cand_prec:>10.3f}"
              f"{len(verified & true) / max(1, len(verified)):>10.3f}{len(verified & true) / max(1, len(true)):>8.3f}")
    print(f"\nspeed-up end to end: {totals['datasketch'] / totals['this project']:.1f}x "
          f"(signatures alone {results['datasketch'][2]['signature'] / results['this project'][2]['signature']:.1f}x)"
          f"; the clean stage's call (find_near_duplicates, incl. clustering): {e2e_s:.2f} s, "
          f"{len(end_to_end.drop)} documents dropped")


if __name__ == "__main__":
    main()
