"""Decontamination: a training row that embeds an eval example is flagged; shared boilerplate is not."""
from __future__ import annotations

import json
import pickle

import pytest

from tasks.data.decontaminate import Decontaminator, conversation_text, eval_texts_from
from tests.conftest import configured

CFG = configured("clean.decontamination", ngram=13, min_containment=0.5)

EVAL = [  # two held-out conversations
    conversation_text([
        {"role": "user", "content": "Why do cats purr, and is it always a sign that they are happy?"},
        {"role": "assistant", "content": "Cats purr by rapidly twitching the muscles of the larynx while they "
         "breathe in and out. Purring often signals contentment, but cats also purr when they are injured, giving "
         "birth or frightened, which suggests it is a way to calm themselves. Some studies even suggest the low "
         "frequencies help bones and tissue heal faster."}]),
    conversation_text([
        {"role": "user", "content": "Give me a short recipe for a lemon vinaigrette dressing."},
        {"role": "assistant", "content": "Whisk three tablespoons of olive oil with one tablespoon of fresh lemon "
         "juice, half a teaspoon of Dijon mustard, a pinch of salt and some black pepper. Taste, adjust the acidity "
         "with more juice if you like it sharper, and use it within a day."}]),
]
UNRELATED = ("user: How do I reverse a list in Python?\nassistant: Use slicing, my_list[::-1], which returns a new "
             "reversed list, or call my_list.reverse() to reverse it in place without making a copy. The built-in "
             "reversed() gives an iterator if you only need to loop over the items backwards.")
GREETING = "assistant: Hello! How can I assist you today? If you have any questions, feel free to ask."


@pytest.fixture(scope="module")
def decon() -> Decontaminator:
    return Decontaminator(EVAL, CFG)


def test_a_row_embedding_an_eval_example_is_flagged(decon):
    row = UNRELATED + "\nuser: Another thing.\n" + EVAL[1] + "\nuser: Thanks!\nassistant: You're welcome."
    assert decon.match(row) == (1.0, 1)
    assert decon.containment(row) >= CFG.min_containment


def test_normalisation_ignores_case_punctuation_and_whitespace(decon):
    row = EVAL[0].upper().replace(",", " ;").replace(". ", "...\n\n").replace("user:", "USER >>")
    assert decon.match(row) == (1.0, 0)


def test_normalisation_folds_unicode_case_and_compatibility_forms():
    example = "user: Wo ist die nächste Straße zum Café am Fluss, bitte?\nassistant: Gehen Sie geradeaus, ＡＢ 12."
    row = example.upper().replace("ＡＢ", "AB")        # STRASSE, CAFÉ; fullwidth letters are their ASCII selves
    assert Decontaminator([example], CFG).match(row) == (1.0, 0)


def test_partial_containment_is_the_fraction_of_the_example(decon):
    question, answer = EVAL[0].split("\n")
    words = answer.split()
    score, example = decon.match(f"{UNRELATED}\n{question}\n{' '.join(words[:len(words) // 2])}")
    assert example == 0 and 0.3 < score < 0.5


def test_an_unrelated_row_is_not_flagged(decon):
    assert decon.match(UNRELATED) is None
    assert decon.containment(UNRELATED) == 0.0


def test_a_test_question_pasted_into_a_longer_prompt_is_contained():
    """N-grams stay inside turns, so the words a training row wraps around the test turns do not hide them."""
    question = EVAL[1].split("\n")[0].removeprefix("user: ")
    answer = EVAL[1].split("\n")[1].removeprefix("assistant: ")
    row = f"user: My teacher asked: {question} Please help!\nassistant: Sure. {answer} Enjoy your salad."
    assert Decontaminator(EVAL, CFG).match(row) == (1.0, 1)


def test_shared_boilerplate_stays_below_the_threshold():
    """Eval and training rows that share only a stock greeting are not contamination."""
    example = (f"user: hi\n{GREETING}\nuser: What is the capital of Peru, and why was it founded on the coast rather "
               "than high in the Andes?\nassistant: Lima is the capital of Peru. The Spanish founded it near the coast "
               "in 1535 so that ships from Panama could supply it easily.")
    row = f"user: hello there\n{GREETING}\n{UNRELATED}"
    score = Decontaminator([example], CFG).containment(row)
    assert 0 < score < CFG.min_containment


def test_short_eval_examples_use_8_grams():
    """With every turn under `ngram` words an example is indexed by its 8-grams; under 8 words it is left out."""
    short = "user: Capital of Peru?\nassistant: Lima is the capital city, right on the Pacific coast."  # 3 8-grams
    tiny = "user: hi\nassistant: Hello! How can I help you today?"                         # turns of 1 and 7
    decon = Decontaminator([short, tiny], CFG)
    assert decon.sizes.tolist() == [3, 0]
    assert decon.match(f"{UNRELATED}\n{short}") == (1.0, 0)
    assert decon.match("user: Capital of Peru?\nassistant: Lima is the capital city, right on the Pacific ocean.") \
        == (2 / 3, 0)
    assert decon.match(f"{UNRELATED}\n{tiny}") is None


def test_ngram_length_is_configurable():
    row = "cats purr by rapidly twitching the muscles of the larynx while they breathe"    # 13 words of EVAL[0]
    assert Decontaminator(EVAL, configured("clean.decontamination", ngram=13)).match(row)[1] == 0
    assert Decontaminator(EVAL, configured("clean.decontamination", ngram=14)).match(row) is None


def test_pickles_without_its_prefilter(decon):
    row = UNRELATED + "\n" + EVAL[0]
    assert decon.match(row) == (1.0, 0)            # builds the 16 MiB prefilter
    data = pickle.dumps(decon)
    assert len(data) < 2**20
    assert pickle.loads(data).match(row) == (1.0, 0)


def test_eval_texts_from_messages_and_text(tmp_path):
    messages = tmp_path / "chat.jsonl"
    messages.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": "Hello!"}]}) + "\n\n")
    text = tmp_path / "text.jsonl"
    text.write_text(json.dumps({"text": "The quick brown fox."}) + "\n" + json.dumps({"text": "Second."}) + "\n")
    assert eval_texts_from(messages) == ["user: Hi\nassistant: Hello!"]
    assert eval_texts_from(text) == ["The quick brown fox.", "Second."]


@pytest.mark.parametrize("content, error", [
    ('{"text": "ok"}\n{"prompt": "no text or messages"}\n', r":2: an eval example needs `messages`"),
    ('{"messages": [{"role": "user"}]}\n', r":1: an eval example needs `messages`"),
    ('{"text": 42}\n', r":1: an eval example needs"),
    ('{"text": "ok"}\nnot json\n', r":2: not JSON"),
    ("\n", r"no eval examples"),
])
def test_eval_texts_from_rejects_a_bad_file(tmp_path, content, error):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=error):
        eval_texts_from(path)
