"""lm-eval on a multiple-choice task built from held-out conversations: the true reply is among same-length
choices, and a real model (in transformers, and served by vLLM) picks it on obvious facts."""
import json

import pytest

from tasks.evaluate import benchmark
from tests.conftest import configured, conversation

FACTS = [("What is the capital of France?", "The capital of France is Paris."),
         ("What do bees make?", "Bees make honey."),
         ("How many legs does a spider have?", "A spider has eight legs."),
         ("What is frozen water called?", "Frozen water is called ice."),
         ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
         ("What language is spoken in Brazil?", "Portuguese is spoken in Brazil.")]
CFG = configured("evaluate.benchmark", size=6, choices=4, choice_chars=60)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    convs = [conversation(q, a, f"c{i}") for i, (q, a) in enumerate(FACTS)]
    return benchmark.write_local_task(convs, CFG, tmp_path_factory.mktemp("bench"), seed=0)


def test_each_question_has_its_true_reply_among_distinct_choices(task_dir):
    docs = [json.loads(line) for line in (task_dir / f"{benchmark.LOCAL_TASK}.jsonl").read_text().splitlines()]
    assert len(docs) == 6
    for doc, (question, reply) in zip(docs, FACTS):
        assert doc["question"] == question and doc["choices"][doc["answer"]] == reply
        assert len(set(doc["choices"])) == 4 and all(len(c) <= 60 for c in doc["choices"])
    assert len({d["answer"] for d in docs}) > 1           # the true reply's position varies


def test_cut_ends_at_a_word_boundary():
    assert benchmark.cut("one two three four", 9) == "one two"
    assert benchmark.cut("short", 9) == "short"


@pytest.mark.slow
def test_the_base_model_picks_the_true_reply_in_transformers(base_model_dir, task_dir):
    from tasks.common.modeling import load_model, load_tokenizer

    scores = benchmark.run_transformers(load_model(base_model_dir), load_tokenizer(base_model_dir), CFG, task_dir)
    assert scores[benchmark.LOCAL_TASK]["acc"] >= 0.8


@pytest.mark.slow
def test_the_served_base_model_picks_the_true_reply_through_vllm(base_server, base_model_dir, task_dir):
    from tasks.common.vllm_server import SERVED_NAME

    scores = benchmark.run_served(base_server.base_url, SERVED_NAME, base_model_dir, CFG, task_dir, concurrency=4)
    assert scores[benchmark.LOCAL_TASK]["acc"] >= 0.8 and "acc_norm" in scores[benchmark.LOCAL_TASK]
