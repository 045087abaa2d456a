import random
import unicodedata

import numpy as np
import pytest

from tasks.data.dedup import _CJK_RANGES, Normaliser, fingerprint
from tasks.data.minhash import ShingleHasher, find_near_duplicates, shingle_strings, signatures
from tests.conftest import configured, conversation
from tests.data.test_clean import run_clean

NORMALISE = configured("clean.near_dedup.normalise")
OFF = configured("clean.near_dedup.normalise", lowercase=False, punctuation=False, digits=False, width=False, diacritics=False)
# Real replies from the packaged ShareGPT, a light edit of each (Chinese: 的 dropped, 了 added, punctuation dropped,
# added or switched to half width, 9 of 155 characters; English: commas, capitals, marks) and a reply on the same topic
ZH = ("猫山王是指一种名贵的水果——榴莲的一个品种，也叫做“猫山皇”。猫山王榴莲产于东南亚地区，特别是马来西亚和印尼，"
      "因为其果肉香气浓郁、甜味可口、质地细腻等特点而备受欢迎。猫山王榴莲的价格较高，属于高档水果。"
      "橘猫则是一种猫的品种，通常指的是毛色为橙色的猫。橘猫通常比较活泼、好动、好奇，是许多猫爱好者喜欢的宠物之一。")
ZH_EDITED = ("猫山王是指一种名贵的水果——榴莲的一个品种,也叫做猫山皇。猫山王榴莲产于东南亚地区，特别是马来西亚和印尼、"
             "因为其果肉香气浓郁、甜味可口、质地细腻等特点而备受了欢迎。猫山王榴莲价格较高，属于高档水果.。"
             "橘猫则是一种猫的品种，通常指的是毛色为橙色的猫！橘猫通常比较活泼、好动好奇，是许多猫爱好者喜欢的宠物之一。")
ZH_OTHER = ("橘猫是一种猫的毛色，通常指的是毛色为橙色的猫，而狸花猫是一种猫的花色，其毛色由黑色、白色和橘色等颜色组成。"
            "因此，虽然橘猫和狸花猫都可能有橘色的毛发，但它们的花色、品种和特征都不同。每只猫都是独特的，拥有自己独特的"
            "外貌和特征，这也是猫作为宠物备受喜爱的原因之一。")
EN = ("Yes, there are several other growth strategies similar to referral programs that can help achieve user growth "
      "and increase engagement. Some popular alternatives include: 1. Affiliate programs: An affiliate program rewards "
      "users (affiliates) for promoting your product or service to their audience. Affiliates receive a commission for "
      "every sale, sign-up, or conversion they generate.")
EN_EDITED = ("Yes there are several other Growth strategies, similar to referral programs, that can help achieve user "
             "growth and increase engagement! Some popular alternatives include 1) affiliate programs - an affiliate "
             "program rewards users, affiliates, for promoting your product or service to their audience. Affiliates "
             "receive a commission for every sale, sign up or conversion they generate.")
EN_OTHER = ("2. Loyalty programs: Loyalty programs reward users for their continued engagement and usage of your "
            "product or service. Users can earn points, discounts, or other benefits based on their activity, "
            "purchases, or milestones. By incentivizing users to stay active and engaged, loyalty programs can "
            "increase retention and drive long-term growth.")


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
    result = find_near_duplicates(texts, configured("clean.near_dedup"))
    dropped = {index for index, _, _ in result.drop}
    assert len(result.drop) == 10
    for i in range(10):                         # exactly one of each planted pair goes
        assert (i in dropped) != (30 + i in dropped)
    assert all(sim >= 0.8 for _, _, sim in result.drop)
    assert not dropped & set(range(10, 30))     # distinct documents all kept
    assert all(0 <= s <= 1 for s in result.candidate_jaccards)


def test_signatures_estimate_jaccard_without_bias():
    rng, hasher, errors = random.Random(1), ShingleHasher(5, NORMALISE), []
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
    hasher = ShingleHasher(3, NORMALISE)
    assert np.array_equal(hasher("The cat sat on the mat"), hasher("the  CAT sat\non the mat"))
    assert np.array_equal(hasher("ＨＥＬＬＯ big world"), hasher("hello big world"))
    assert len(hasher("a b c d e")) == 3 and len(hasher("a b")) == 1 and len(hasher("")) == 1
    _, offsets = hasher.chunk(["a b c d", "", "x y"])
    assert offsets.tolist() == [0, 2, 3, 4]


def test_num_perm_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of two"):
        configured("clean.near_dedup", num_perm=100)


def test_cjk_near_duplicates_are_caught_by_character_shingles():
    base = ("今天天气很好，我们一起去公园散步吧。公园里有很多人在跑步、打太极拳，还有小朋友在放风筝。"
            "我们走到湖边，看见几只白鹅在水里游来游去。中午我们在草地上野餐，吃了三明治和水果。"
            "下午我们去了附近的博物馆，参观了关于古代丝绸之路的展览，学到了很多历史知识。")
    near = base.replace("三明治", "饺子")          # a small edit: high Jaccard of character 5-grams
    other = ("机器学习是人工智能的一个分支，它让计算机能够从数据中学习规律，而不需要明确的编程。"
             "常见的方法包括监督学习、无监督学习和强化学习，每种方法都有各自适合的应用场景。")
    japanese = ("吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。"
                "何でも薄暗いじめじめした所で泣いていた事だけは記憶している。")
    result = find_near_duplicates([base, other, near, japanese, japanese.replace("猫", "犬")],
                                  configured("clean.near_dedup", threshold=0.7))
    dropped = {index for index, _, _ in result.drop}
    assert len(dropped & {0, 2}) == 1 and len(dropped & {3, 4}) == 1 and 1 not in dropped
    assert len(ShingleHasher(5, NORMALISE)(base)) > 100      # characters, not one giant "word"


def _reference(text: str) -> list[str]:
    """Normalisation written per character from NormaliseConfig's comments: what the byte-level Normaliser must give."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = unicodedata.normalize("NFC", "".join(c for c in text if not "\u0300" <= c <= "\u036f"))
    out = []
    for c in text:
        if c.isspace() or c < " " or unicodedata.category(c)[0] in "PS":
            c = " "
        elif any(lo <= ord(c) <= hi for lo, hi in _CJK_RANGES):
            c = f" {c} "
        out.append(c)
    return ["0" * len(t) if t.isascii() and t.isdigit() else t for t in "".join(out).split()]


MIXED = ["Ünïcödé ÉCOLE café naïve — “quotes” «guillemets» 1,234.56 ５０％ ①② ﬁne Straße İstanbul ΆΣΟΣ Привет, мир!",
         "مرحبا ١٢٣ नमस्ते 東京タワー，ｶﾀｶﾅ。한국어 문장입니다! 😀👍🏽 𠀀𠀁 x\u00a0y\u2003z\tw\x01v e\u0301te",
         "", "ASCII only: A-B_C (d) 42! 3.14 x86 1st", "中文结尾 第1295个 ４２"]


def test_normaliser_matches_its_per_character_definition_in_every_script():
    norm = Normaliser(NORMALISE)
    assert [t.split() for t in norm.texts(MIXED)] == [_reference(t) for t in MIXED]
    assert norm.texts(["Hello, World! Café ＡＢＣ１２３ ５,000.5"])[0].split() == ["hello", "world", "cafe", "abc123",
                                                                            "0", "000", "0"]
    off = Normaliser(OFF).texts(["Hello, World! Café ＡＢＣ"])[0].split()
    assert off == ["Hello,", "World!", "Café", "Ａ", "Ｂ", "Ｃ"]          # switched off: nothing folded


def test_each_switch_folds_its_variation_which_is_kept_when_off():
    def same(a: str, b: str, **on) -> bool:
        norm = Normaliser(OFF.model_copy(update=on))
        return norm.texts([a])[0].split() == norm.texts([b])[0].split()

    for switch, a, b in (("lowercase", "Big Data", "big data"), ("punctuation", "yes, and no.", "yes and no"),
                         ("punctuation", "你好，世界！", "你好世界"), ("digits", "order 1234", "order 9876"),
                         ("width", "ＡＢＣ 123", "ABC １２３"), ("diacritics", "résumé naïve", "resume naive")):
        assert same(a, b, **{switch: True}) and not same(a, b), switch
    assert not same("order 12", "order 123", digits=True)      # a digit each: lengths still differ
    assert not same("python3 word7", "python2 word8", digits=True)   # digits in names stay
    assert not same("你好世界", "你好地球", **configured("clean.near_dedup.normalise").model_dump())


def test_vectorised_shingles_equal_plain_python_shingles():
    hasher = ShingleHasher(5, configured("clean.near_dedup.normalise"), cjk_n=3)
    texts = [ZH, EN, MIXED[0], MIXED[1], "我用 python 写代码", "短", "a b", ""]
    for text, normalised in zip(texts, hasher.normaliser.texts(texts)):
        assert len(hasher(text)) == len(shingle_strings(normalised, hasher)), text
    flat, offsets = hasher.chunk(texts)                      # a chunk hashes each document as it would alone
    assert all(np.array_equal(np.unique(flat[a:b]), hasher(t)) for t, a, b in zip(texts, offsets, offsets[1:]))


@pytest.mark.parametrize("original, edited, other", [(ZH, ZH_EDITED, ZH_OTHER), (EN, EN_EDITED, EN_OTHER)],
                         ids=["chinese", "english"])
def test_light_edits_are_near_duplicates_only_after_normalisation(original, edited, other):
    on, off = ShingleHasher.configured(configured("clean.near_dedup")), ShingleHasher.configured(configured("clean.near_dedup", normalise=OFF))
    assert _jaccard(on(original), on(edited)) >= 0.85 and _jaccard(off(original), off(edited)) < 0.8
    assert _jaccard(on(original), on(other)) < 0.1
    found = find_near_duplicates([original, other, edited], configured("clean.near_dedup"))
    assert {frozenset((d, k)) for d, k, _ in found.drop} == {frozenset((0, 2))}      # the pair merged, `other` kept
    assert find_near_duplicates([original, other, edited], configured("clean.near_dedup", normalise=OFF)).drop == []


def test_clean_stage_applies_the_configured_normalisation(tmp_path):
    rows = [conversation("What else works like referrals?", EN, "original"),
            conversation("What else works like referrals?", EN_EDITED, "edited"),
            conversation("What else works like referrals?", EN_OTHER, "other")]
    counts, kept, entries = run_clean(tmp_path, rows)
    assert counts["dropped_by_reason"] == {"near_duplicate": 1} and set(kept) == {"original", "other"}
    assert any(e["id"] == "edited" and e["reason"] == "near_duplicate" for e in entries)
    counts, kept, _ = run_clean(tmp_path, rows, near_dedup={"normalise": OFF.model_dump()})
    assert counts["dropped_by_reason"] == {} and set(kept) == {"original", "edited", "other"}
