import random

import numpy as np
import pytest

from tasks.config import NearDedupConfig
from tasks.data.dedup import fingerprint
from tasks.data.minhash import ShingleHasher, find_near_duplicates, signatures


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
        NearDedupConfig(num_perm=100)


def test_cjk_near_duplicates_are_caught_by_character_shingles():
    base = ("今天天气很好，我们一起去公园散步吧。公园里有很多人在跑步、打太极拳，还有小朋友在放风筝。"
            "我们走到湖边，看见几只白鹅在水里游来游去。中午我们在草地上野餐，吃了三明治和水果。"
            "下午我们去了附近的博物馆，参观了关于古代丝绸之路的展览，学到了很多历史知识。")
    near = base.replace("三明治", "饺子")          # a small edit: high Jaccard of character 5-grams
    other = ("机器学习是人工智能的一个分支，它让计算机能够从数据中学习规律，而不需要明确的编程。"
             "常见的方法包括监督学习、无监督学习和强化学习，每种方法都有各自适合的应用场景。")
    japanese = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"
                "何でも薄暗いじめじめした所で泣いていた事だけは記憶している。")
    result = find_near_duplicates([base, other, near, japanese, japanese.replace("猫", "犬")], 0.7, 128, 5)
    dropped = {index for index, _, _ in result.drop}
    assert len(dropped & {0, 2}) == 1 and len(dropped & {3, 4}) == 1 and 1 not in dropped
    assert len(ShingleHasher(5)(base)) > 100      # characters, not one giant "word"
