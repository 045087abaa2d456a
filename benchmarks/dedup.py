"""Near-dedup: this project's vectorised MinHash-LSH (tasks/data/minhash.py) vs datasketch, same corpus, same run.

The clean stage's settings (NearDedupConfig: threshold 0.8, 128 permutations, word 5-grams, CJK character n-grams,
normalisation on). Both methods shingle the same normalised text (tasks/data/dedup.py's Normaliser, which datasketch
is given too) and verify their LSH candidates with the same exact-Jaccard code; timings include it. Timings are CPU
seconds of this one process: on a shared machine wall time measures the neighbours as much as the method.
1. Speed: 200-word windows of real ShareGPT replies plus planted near-duplicates with 0-6% of words substituted (true
   Jaccard of word 5-grams spans ~0.6-1.0, so pairs sit on both sides of the 0.8 threshold).
2. Light edits (benchmarks/light_edits.py), English and Chinese: a true pair has exact Jaccard of normalised shingles
   >= 0.8 (checked on every planted pair and every candidate any method proposes). Each method's verified pairs, with
   normalisation off, as the stage had it before (case and width only) and on; `planted` is the share of planted
   light-edit pairs found.

    .venv/bin/python -m benchmarks.dedup [--docs N] [--planted N] [--light-docs N] [--light-planted N] [--cjk-chars N]
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np
from datasketch import MinHash, MinHashLSH

from benchmarks.light_edits import english_windows, light_edit_corpus
from tasks.config import NearDedupConfig, changed, load_config
from tasks.data.minhash import (
    ShingleHasher,
    bands_for,
    byte_chunks,
    candidate_pairs,
    find_near_duplicates,
    shingle_strings,
    signatures,
)

NEAR_DEDUP = load_config().clean.near_dedup   # params.yaml: what the pipeline runs
ON = changed(NEAR_DEDUP.normalise, lowercase=True, punctuation=True, digits=True, width=True, diacritics=True)
OFF = changed(ON, lowercase=False, punctuation=False, digits=False, width=False, diacritics=False)
MODES = {"off": OFF, "case+width (before)": changed(ON, punctuation=False, digits=False, diacritics=False),
         "on (default)": ON}
Pairs = set[tuple[int, int]]


def substitution_corpus(docs: int, planted: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    rng = random.Random(seed)
    texts = english_windows(docs - planted)
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


def run_datasketch(texts: list[str], cfg: NearDedupConfig) -> tuple[Pairs, dict[str, float]]:
    t0 = time.process_time()
    hasher = ShingleHasher.configured(cfg)
    shingle_sets = [[s.encode() for s in shingle_strings(t, hasher)] for t in hasher.normaliser.texts(texts)]
    t1 = time.process_time()
    hashes = []
    for s in shingle_sets:
        m = MinHash(num_perm=cfg.num_perm)
        m.update_batch(s)
        hashes.append(m)
    t2 = time.process_time()
    lsh, pairs = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm), set()
    for i, m in enumerate(hashes):
        pairs.update((j, i) for j in lsh.query(m))
        lsh.insert(i, m)
    t3 = time.process_time()
    return pairs, {"shingle": t1 - t0, "signature": t2 - t1, "lsh": t3 - t2}


def run_ours(texts: list[str], cfg: NearDedupConfig) -> tuple[Pairs, dict[str, float]]:
    t0 = time.process_time()
    hasher = ShingleHasher.configured(cfg)
    chunks = [hasher.chunk(texts[start:end]) for start, end in byte_chunks(texts)]
    t1 = time.process_time()
    sig = np.concatenate([signatures(flat, offsets, cfg.num_perm) for flat, offsets in chunks])
    t2 = time.process_time()
    pairs = candidate_pairs(sig, *bands_for(cfg.threshold, cfg.num_perm))
    t3 = time.process_time()
    return pairs, {"shingle": t1 - t0, "signature": t2 - t1, "lsh": t3 - t2}


def verified(pairs: Pairs, shingles: list[np.ndarray], threshold: float) -> Pairs:
    return {p for p in pairs if exact_jaccard(shingles[p[0]], shingles[p[1]]) >= threshold}


def speed(docs: int, planted: int, cfg: NearDedupConfig) -> None:
    texts, planted_pairs = substitution_corpus(docs, planted)
    truth_shingles = [ShingleHasher.configured(cfg)(t) for t in texts]
    results = {}
    for name, fn in (("datasketch", run_datasketch), ("this project", run_ours)):
        pairs, times = fn(texts, cfg)
        t0 = time.process_time()
        found = verified(pairs, truth_shingles, cfg.threshold)
        times["verify"] = time.process_time() - t0
        results[name] = (pairs, found, times)
    true = verified(set(planted_pairs).union(*(r[0] for r in results.values())), truth_shingles, cfg.threshold)
    t0 = time.process_time()
    end_to_end = find_near_duplicates(texts, cfg)
    e2e_s = time.process_time() - t0

    print(f"\n1. Speed: {len(texts)} docs (~200 words, ShareGPT), {len(planted_pairs)} planted variants (words "
          f"substituted), {len(true)} true pairs (Jaccard >= {cfg.threshold}); num_perm {cfg.num_perm}, word "
          f"{cfg.shingle_words}-grams, normalised, 1 process, CPU seconds\n")
    print(f"{'method':<14}{'shingle s':>10}{'sign s':>8}{'lsh s':>7}{'verify s':>9}{'total s':>9}{'docs/s':>9}"
          f"{'cands':>7}{'cand prec':>10}{'precision':>10}{'recall':>8}")
    totals = {}
    for name, (pairs, found, t) in results.items():
        totals[name] = total = sum(t.values())
        print(f"{name:<14}{t['shingle']:>10.2f}{t['signature']:>8.2f}{t['lsh']:>7.2f}{t['verify']:>9.2f}"
              f"{total:>9.2f}{len(texts) / total:>9.0f}{len(pairs):>7}{len(pairs & true) / max(1, len(pairs)):>10.3f}"
              f"{len(found & true) / max(1, len(found)):>10.3f}{len(found & true) / max(1, len(true)):>8.3f}")
    print(f"\nspeed-up end to end: {totals['datasketch'] / totals['this project']:.1f}x "
          f"(signatures alone {results['datasketch'][2]['signature'] / results['this project'][2]['signature']:.1f}x)"
          f"; the clean stage's call (find_near_duplicates, incl. clustering): {e2e_s:.2f} s, "
          f"{len(end_to_end.drop)} documents dropped")


def light_edits(docs: int, planted: int, cfg: NearDedupConfig) -> None:
    print(f"\n2. Light edits: {docs} docs per language, {planted} of them edited copies; true pair: exact Jaccard of "
          f"normalised shingles >= {cfg.threshold}; CJK character {cfg.shingle_cjk_chars}-grams\n")
    print(f"{'language':<10}{'method':<14}{'normalisation':<21}{'cands':>7}{'true':>6}{'precision':>10}{'recall':>8}"
          f"{'planted':>9}")
    for language in ("English", "Chinese"):
        texts, planted_pairs = light_edit_corpus(language, docs, planted)
        truth_shingles = [ShingleHasher.configured(cfg)(t) for t in texts]
        rows = []
        for mode, norm in MODES.items():
            mode_cfg = cfg.model_copy(update={"normalise": norm})
            pairs, _ = run_ours(texts, mode_cfg)
            hasher = ShingleHasher.configured(mode_cfg)
            shingles = truth_shingles if norm == cfg.normalise else [hasher(t) for t in texts]
            rows.append(("this project", mode, pairs, verified(pairs, shingles, cfg.threshold)))
        pairs, _ = run_datasketch(texts, cfg)
        rows.append(("datasketch", "on (same text)", pairs, verified(pairs, truth_shingles, cfg.threshold)))
        true = verified(set(planted_pairs).union(*(r[2] for r in rows)), truth_shingles, cfg.threshold)
        for method, mode, pairs, found in rows:
            print(f"{language:<10}{method:<14}{mode:<21}{len(pairs):>7}{len(true):>6}"
                  f"{len(found & true) / max(1, len(found)):>10.3f}{len(found & true) / max(1, len(true)):>8.3f}"
                  f"{len(found & set(planted_pairs)) / len(planted_pairs):>9.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--planted", type=int, default=2000)
    parser.add_argument("--light-docs", type=int, default=5000)
    parser.add_argument("--light-planted", type=int, default=1000)
    parser.add_argument("--cjk-chars", type=int, default=NEAR_DEDUP.shingle_cjk_chars)
    args = parser.parse_args()
    cfg = changed(NEAR_DEDUP, shingle_cjk_chars=args.cjk_chars)
    speed(args.docs, args.planted, cfg)
    light_edits(args.light_docs, args.light_planted, cfg)


if __name__ == "__main__":
    main()
