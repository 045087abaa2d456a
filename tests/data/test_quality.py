"""The quality and language filters: each drops a row it must drop and keeps a similar row it must keep."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest

from tasks.data.filters.language import Language, language_of
from tasks.data.filters.quality import (
    CHECKS,
    Quality,
    assistant_replies,
    duplicate_5gram_fraction,
    duplicate_line_fraction,
    mean_word_length,
    quality_reason,
    top_2gram_fraction,
    words,
)
from tests.conftest import configured

# the thresholds measured and recommended for chat data, spelled out so these tests do not move with params.yaml
CFG = configured("clean.quality", max_symbol_word_ratio=1.0, max_duplicate_line_fraction=0.5, max_top_2gram_fraction=0.5,
                    max_duplicate_5gram_fraction=0.6, min_mean_word_length=1.5, max_mean_word_length=10.0)

PARAGRAPH = ("Photosynthesis is the process by which green plants turn light into chemical energy. Inside the "
             "chloroplasts, chlorophyll absorbs mostly red and blue light, and that energy splits water molecules, "
             "releasing oxygen as a by-product. The captured energy is stored briefly in carrier molecules, which "
             "then drive the Calvin cycle: carbon dioxide from the air is fixed into three-carbon sugars, later "
             "assembled into glucose. Plants burn part of that glucose for their own growth and store the rest as "
             "starch in roots, seeds and fruit.")
CODE = "".join(f"def handler_{i}(event):\n    # TODO: validate the event before it reaches the database\n"
               '    logger.warning("handler not implemented yet")\n    return None\n\n' for i in range(20))


def chat(reply: str, prompt: str = "Tell me about photosynthesis.") -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


def test_a_plain_answer_is_kept():
    assert quality_reason(chat(PARAGRAPH), CFG) is None


@pytest.mark.parametrize("messages, reason", [
    ([{"role": "user", "content": "Hi there, how are you?"}, {"role": "assistant", "content": "  "}], "empty_turn"),
    ([{"role": "assistant", "content": "Hello, how can I help?"}, {"role": "user", "content": "Tell me a joke."}],
     "first_turn_not_user"),
    ([{"role": "user", "content": "Tell me a joke about cats."}], "no_assistant_reply"),
    (chat("Yes.", "Ok?"), "too_short"),
    (chat(PARAGRAPH * 40), "too_long"),
])
def test_structural_filters(messages, reason):
    assert quality_reason(messages, CFG) == reason


@pytest.mark.parametrize("messages, cfg", [
    ([{"role": "system", "content": "Be brief."}, *chat("Hello! How can I help you today?", "Hi there")], CFG),
    ([{"role": "user", "content": "Tell me a joke about cats."}], CFG.model_copy(update={"require_assistant": False})),
    (chat("Yes, it is.", "Is it?"), CFG.model_copy(update={"min_chars": 10})),
])
def test_structural_filters_keep(messages, cfg):
    assert quality_reason(messages, cfg) is None


def test_code_blocks_are_not_judged():
    """A code-heavy reply is kept; the same reply with its code unfenced repeats lines and is dropped."""
    intro = "Here is the module. Each handler receives the event and, for now, returns nothing. " + PARAGRAPH
    fenced = f"{intro}\n```python\n{CODE}```\nReplace the TODO comments with your validation logic."
    assert quality_reason(chat(fenced), CFG) is None
    assert quality_reason(chat(fenced.replace("```python", "").replace("```", "")), CFG) == "duplicate_lines"


def test_a_short_code_only_reply_is_kept_under_strict_thresholds():
    strict = configured("clean.quality")     # the pipeline's thresholds
    assert quality_reason(chat(f"```python\n{CODE}```", "Write stub handlers."), strict) is None


def test_repetition_loop_is_dropped():
    loop = "I am sorry, but I cannot help with that request right now. " * 12
    assert quality_reason(chat(loop), CFG) == "duplicate_5grams"
    assert quality_reason(chat(PARAGRAPH + " " + loop[:60]), CFG) is None


def test_short_replies_are_not_judged():
    """Under MIN_WORDS words the statistics mean little: a short polite repetition is fine."""
    thanks = chat("Thank you so much! Thank you so much! Thank you so much!", "I got the job!")
    assert quality_reason(thanks, CFG) is None


def test_repeated_lines_are_dropped():
    lines = "\n".join(["The answer is in the documentation, please read it carefully."] * 8)
    assert quality_reason(chat(lines), CFG) == "duplicate_lines"
    assert quality_reason(chat(PARAGRAPH.replace(". ", ".\n")), CFG) is None


def test_duplicate_lines_weigh_characters_not_lines():
    """A survey's repeated answer options are many lines but few characters."""
    survey = "\n".join(f"{i}. How satisfied are you with the {topic} of our service this year?\n* Yes\n* No"
                       for i, topic in enumerate(["speed", "price", "support", "quality", "reliability", "design"]))
    r = assistant_replies(chat(survey))
    assert 0 < duplicate_line_fraction(r)[0] < 0.1
    assert quality_reason(chat(survey), CFG.model_copy(update={"max_duplicate_5gram_fraction": 1.0})) is None


def test_keyword_spam_is_dropped_by_the_top_2gram():
    spam = " ".join(f"{w} Mama Mia" for w in PARAGRAPH.split())
    assert quality_reason(chat(spam), CFG) == "top_2gram"
    assert quality_reason(chat(PARAGRAPH + " Mama Mia!"), CFG) is None


def test_symbols_count_hashtags_and_ellipses_not_headings():
    strict = CFG.model_copy(update={"max_symbol_word_ratio": 0.1})
    sections = "".join(f"### Step {i}\n{sentence}.\n" for i, sentence in enumerate(PARAGRAPH.split(". ")))
    assert quality_reason(chat(sections), strict) is None
    hashtags = sections.replace("### Step", "#step #tips #plants ... Step")
    assert quality_reason(chat(hashtags), strict) == "symbol_word_ratio"


def test_garbled_long_words_are_dropped():
    rng = random.Random(0)
    blob = " ".join("".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=24)) for _ in range(60))
    assert quality_reason(chat(blob), CFG) == "mean_word_length"
    assert quality_reason(chat(PARAGRAPH), CFG) is None


def test_chinese_is_not_judged_by_word_length():
    """Chinese is written without spaces: each character is a word, and mean word length does not apply."""
    chinese = ("光合作用是绿色植物利用光能，把二氧化碳和水转化为储存能量的有机物，并释放出氧气的过程。它主要在叶片的"
               "叶绿体中进行：叶绿素吸收红光和蓝光，分解水分子，产生氧气；随后，卡尔文循环把空气中的二氧化碳固定成糖类。"
               "植物用一部分葡萄糖维持自身生长，其余的以淀粉形式储存在根、种子和果实里。")
    r = assistant_replies(chat(chinese))
    assert np.isnan(mean_word_length(r)[0]) and r.judged[0]
    assert quality_reason(chat(chinese, "什么是光合作用？"), CFG) is None


def test_statistics():
    twice = assistant_replies(chat(PARAGRAPH + " " + PARAGRAPH))
    assert duplicate_5gram_fraction(twice)[0] == pytest.approx(0.5)
    assert duplicate_5gram_fraction(assistant_replies(chat(PARAGRAPH)))[0] == 0
    assert top_2gram_fraction(assistant_replies(chat("la " * 60)))[0] == 1.0     # overlapping occurrences, capped
    lines = assistant_replies(chat("a long line of text\na long line of text\nshort"))
    assert duplicate_line_fraction(lines)[0] == pytest.approx(19 / 43)


def test_replies_are_judged_one_by_one():
    """A loop in one reply of a long conversation is not diluted by the others."""
    loop = "I am sorry, but I cannot help with that request right now. " * 12
    messages = chat(PARAGRAPH) * 5 + chat(loop)
    assert quality_reason(messages, CFG) == "duplicate_5grams"
    assert quality_reason(chat(PARAGRAPH) * 6, CFG) is None


def test_words():
    w = words("Don’t STOP—now… 我爱你。ok «yes»".encode())
    assert w.length.tolist() == [3, 1, 4, 3, 1, 1, 1, 2, 3]
    assert w.cjk.tolist() == [False] * 4 + [True] * 3 + [False] * 2
    assert words(b"stop").hash[0] == w.hash[2] != w.hash[3]


FRENCH = chat("Bien sûr. La photosynthèse est le processus par lequel les plantes utilisent la lumière du soleil pour "
              "transformer le dioxyde de carbone et l'eau en glucose et en oxygène. Elle se déroule dans les feuilles, "
              "à l'intérieur des chloroplastes, grâce à un pigment vert appelé chlorophylle.",
              "Peux-tu m'expliquer la photosynthèse ?")


def reason(f, messages):
    drop = f.filter(messages)
    return drop and drop.reason


def test_language_filter():
    english = Language(configured("clean.language", languages=["en"]))
    assert reason(english, FRENCH) == "language" and english.filter(FRENCH).detail["language"] == "fr"
    assert reason(english, chat(PARAGRAPH)) is None
    assert reason(Language(configured("clean.language", languages=["en", "fr"])), FRENCH) is None
    assert quality_reason(FRENCH, CFG) is None                       # the quality filter does not judge language


def test_language_score():
    names = chat("1. BrewHaven\n2. BeanVault\n3. JavaJunction\n4. MochaMingle\n5. CremaCove\n6. RoastRiot\n"
                 "7. DripDen\n8. PerkPlace\n9. GrindGarden\n10. LatteLoft", "Suggest names for a coffee shop.")
    lang, score = language_of(names)
    assert lang == "en" and 0.5 < score < 0.9
    assert reason(Language(configured("clean.language", languages=["en"], min_language_score=0.9)), names) \
        == "language_score"
    assert reason(Language(configured("clean.language", languages=["en"], min_language_score=0.5)), names) is None


def test_language_reads_replies_first():
    """The replies decide (prompts often hold pasted code, logs or documents); code alone is not judged."""
    french = FRENCH[1]["content"]
    assert language_of(chat(PARAGRAPH, french))[0] == "en"
    assert language_of(chat(french, PARAGRAPH))[0] == "fr"
    assert language_of(chat(f"```python\n{CODE}```", "Stubs?")) is None


def test_filters_pickle():
    """They run in worker processes."""
    assert pickle.loads(pickle.dumps(quality_reason))(FRENCH, CFG) is None
    assert [pickle.loads(pickle.dumps(f)) for f in CHECKS] == CHECKS
    english = pickle.loads(pickle.dumps(Language(configured("clean.language", languages=["en"]))))
    assert english.filter(FRENCH).reason == "language"
    assert pickle.loads(pickle.dumps(Quality(CFG))).filter(chat("", "Hi")).reason == "empty_turn"
