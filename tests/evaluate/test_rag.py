"""The RAG set is built from held-out replies only, retrieval is scored by passage id, and MiniLM finds the passage
that answers a question among distractors."""
import json
import math

import pytest

from tasks.common.jsonl import write_jsonl
from tasks.evaluate.rag import Retriever, embedder_path, held_out_set, retrieval_scores, split_passages, user_set
from tests.conftest import configured, conversation

REPLIES = {
    "What is the capital of France?": "Paris is the capital of France. It lies on the Seine.",
    "What do bees make?": "Bees make honey from nectar. They store it in wax combs.",
    "How many legs does a spider have?": "A spider has eight legs. Insects have six.",
}


def test_passages_pack_whole_sentences_up_to_the_limit():
    text = "One short sentence. Another short one! A third? " + "x" * 90 + "."
    assert split_passages(text, 50) == ["One short sentence. Another short one! A third?", "x" * 90 + "."]
    assert split_passages("", 50) == []


def test_held_out_set_uses_each_reply_as_its_own_context_and_the_others_as_distractors():
    convs = [conversation(q, a, f"c{i}") for i, (q, a) in enumerate(REPLIES.items())]
    rag = held_out_set(convs, configured("evaluate.rag", passage_chars=40, size=2))
    assert len(rag.questions) == 2 and len(rag.passages) == 6      # every reply's passages, for 2 questions
    first = rag.questions[0]
    assert first["question"] == "What is the capital of France?"
    assert [rag.passages[i] for i in first["relevant"]] == first["reference_contexts"] == [
        "Paris is the capital of France.", "It lies on the Seine."]


def test_retrieval_scores_by_passage_id():
    scores = retrieval_scores([5, 1, 2], relevant=[1, 2], k=3)
    assert scores["recall_at_k"] == 1.0 and scores["mrr"] == 0.5
    assert scores["ndcg_at_k"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / (1 + 1 / math.log2(3)))
    assert retrieval_scores([5, 6], relevant=[1], k=2) == {"recall_at_k": 0.0, "mrr": 0.0, "ndcg_at_k": 0.0}
    assert math.isnan(retrieval_scores([1], relevant=[], k=1)["mrr"])


def test_minilm_ranks_the_answering_passage_first():
    passages = [p for a in REPLIES.values() for p in split_passages(a, 40)]
    ranked = Retriever(passages, embedder_path()).top_k(list(REPLIES), k=2)
    assert [passages[r[0]] for r in ranked] == ["Paris is the capital of France.", "Bees make honey from nectar.",
                                               "A spider has eight legs."]


def test_users_documents_and_questions(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("The warranty lasts two years. Returns are free.")
    (tmp_path / "docs" / "b.txt").write_text("Support answers within a day.")
    write_jsonl(tmp_path / "q.jsonl", [{"question": "How long is the warranty?", "reference": "Two years.",
                                        "reference_contexts": ["The warranty lasts two years."]}])
    rag = user_set(configured("evaluate.rag", documents=str(tmp_path / "docs"), questions=str(tmp_path / "q.jsonl"), passage_chars=30))
    assert rag.passages == ["The warranty lasts two years.", "Returns are free.", "Support answers within a day."]
    assert rag.questions[0]["relevant"] == [0]
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no passages .* or no questions"):
        user_set(configured("evaluate.rag", documents=str(tmp_path / "docs"), questions=str(tmp_path / "empty.jsonl")))
    assert json.loads(json.dumps(rag.questions))   # rows stay plain JSON for the MLflow table


class Answers:
    """Stands in for the served model's replies, so the scores can be checked against known answers."""

    def __init__(self, replies):
        self.replies = replies

    def chat_many(self, prompts, concurrency, max_tokens):
        assert all("Context:" in p[0]["content"] for p in prompts)
        return self.replies


def test_ragas_scores_tell_the_reference_answer_from_a_wrong_one():
    from tasks.evaluate.rag import rag_eval

    convs = [conversation(q, a, f"c{i}") for i, (q, a) in enumerate(REPLIES.items())]
    cfg = configured("evaluate.rag", passage_chars=40, top_k=2)
    rag = held_out_set(convs, cfg)
    right, rows = rag_eval(Answers(list(REPLIES.values())), rag, cfg, concurrency=2)
    wrong, _ = rag_eval(Answers(["I like trains."] * 3), rag, cfg, concurrency=2)
    assert right["mrr"] == 1.0 and right["recall_at_k"] >= 0.8   # "Bees ..." brings "Insects have six." second
    assert right["non_llm_context_recall"] == right["recall_at_k"]   # by string and by id: the same passages
    assert right["semantic_similarity"] > 0.95 > 0.3 > wrong["semantic_similarity"]
    assert right["semantic_similarity_nan_rate"] == 0.0 and len(rows) == 3
    assert wrong["recall_at_k"] == right["recall_at_k"]        # retrieval does not depend on the answers
