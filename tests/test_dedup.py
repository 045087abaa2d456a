import random

from tasks.dedup import fingerprint, jaccard, near_duplicates, shingle_hashes


def _doc(rng, n=120):
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()
    return " ".join(rng.choice(words) + str(rng.randint(0, 50)) for _ in range(n))


def test_exact_dedup_normalises_case_width_and_space():
    assert fingerprint("Hello   World\n") == fingerprint("hello world") == fingerprint("ＨＥＬＬＯ world")
    assert fingerprint("hello world") != fingerprint("hello there world")


def test_near_duplicates_removed_and_distinct_texts_kept():
    rng = random.Random(0)
    originals = [_doc(rng) for _ in range(30)]
    variants = []
    for text in originals[:10]:                 # ~2% of words edited: Jaccard of 5-grams well above 0.8
        words = text.split()
        words[rng.randrange(len(words))] = "EDITED"
        variants.append(" ".join(words))
    texts = originals + variants
    dropped, sims = near_duplicates(texts, threshold=0.8, num_perm=128, n=5)
    dropped_idx = {d.index for d in dropped}
    assert len(dropped) == 10
    for i in range(10):                         # exactly one of each planted pair goes
        assert (i in dropped_idx) != (30 + i in dropped_idx)
    assert all(d.jaccard >= 0.8 for d in dropped)
    assert not dropped_idx & set(range(10, 30))  # distinct documents all kept
    assert all(0 <= s <= 1 for s in sims)


def test_jaccard_of_shingles():
    a, b = shingle_hashes("a b c d e f", 2), shingle_hashes("a b c d e g", 2)
    assert jaccard(a, a) == 1.0
    assert abs(jaccard(a, b) - 4 / 6) < 1e-9
