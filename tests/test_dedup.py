import random

import numpy as np
import pytest

from tasks.config import CleanConfig
from tasks.dedup import fingerprint
from tasks.minhash import ShingleHasher, find_near_duplicates, signatures


def _doc(rng, n=300):   # at 120 words LSH (any MinHash, 9 bands x 13 rows) misses ~3% of J=0.92 pairs
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
    return " ".join(rng.choice(words) + str(rng.randint(0, 50)) for _ in range(n))


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.intersect1d(a, b).size
    return inter / (a.size + b.size - inter)


def test_exact_dedup_normalises_case_width_and_space():
    assert fingerprint("Hello   World\n") == fingerprint("hello world") == fingerprint("ＨＥＬＬＯ world")
    assert fingerprint("hello world") != fingerprint("hello there world")


def test_near_duplicates_removed_and_distinct_texts_kept():
    rng = random.Random(0)
    originals = [_doc(rng) for _ in range(30)]
    variants = []
    for text in originals[:10]:                 # one word edited: Jaccard of 5-grams well above 0.8
        words = text.split()
        words[rng.randrange(len(words))] = "EDITED"
        variants.append(" ".join(words))
    texts = originals + variants
    result = find_near_duplicates(texts, threshold=0.8, num_perm=128, n=5)
    dropped = {index for index, _, _ in result.drop}
    assert len(result.drop) == 10
    for i in range(10):                         # exactly one of each planted pair goes
        assert (i in dropped) != (30 + i in dropped)
    assert all(sim >= 0.8 for _, _, sim in result.drop)
    assert not dropped & set(range(10, 30))     # distinct documents all kept
    assert all(0 <= s <= 1 for s in result.candidate_jaccards)


def test_signatures_estimate_jaccard_without_bias():
    rng, hasher, errors = random.Random(1), ShingleHasher(5), []
    words = [f"w{i}" for i in range(500)]
    for _ in range(100):
        a = [rng.choice(words) for _ in range(200)]
        b = list(a)
        for i in rng.sample(range(200), rng.randint(0, 30)):
            b[i] = rng.choice(words)
        flat, offsets = hasher.chunk([" ".join(a), " ".join(b)])
        sig = signatures(flat, offsets, 128)
        errors.append((sig[0] == sig[1]).mean() - _jaccard(hasher(" ".join(a)), hasher(" ".join(b))))
    assert abs(np.mean(errors)) < 0.01 and np.mean(np.abs(errors)) < 0.05


def test_shingles_ignore_case_width_and_whitespace_and_keep_short_documents():
    hasher = ShingleHasher(3)
    assert np.array_equal(hasher("The cat sat on the mat"), hasher("the  CAT sat\non the mat"))
    assert np.array_equal(hasher("ＨＥＬＬＯ big world"), hasher("hello big world"))
    assert len(hasher("a b c d e")) == 3 and len(hasher("a b")) == 1 and len(hasher("")) == 1
    flat, offsets = hasher.chunk(["a b c d", "", "x y"])
    assert offsets.tolist() == [0, 2, 3, 4]


def test_num_perm_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        CleanConfig(num_perm=100)
