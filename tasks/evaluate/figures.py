"""What evaluate measures, as one schema: the typed results it writes (data/eval/metrics.json) and the named figures
that the register stage gates on, the run report and lineage print, the registry tags carry and the pipeline's parent
run compares.

The results are validated when evaluate writes them and when register reads them: a figure renamed on one side, or
missing where its measurement was switched on, is an error naming it, never a comparison silently skipped. A
section that this run's params switched off is None (`judge`, `canaries`, the LLM-judged RAG metrics); a figure that
was measured but scored on no row (NaN everywhere) is None too, and its gate says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from tasks.config import EvaluateConfig, VsChampionConfig


class _Figures(BaseModel):
    model_config = ConfigDict(extra="forbid")


Score = float | None   # None: measured, but no row scored (NaN on every row)


class TaskScore(_Figures):
    acc: float
    acc_norm: float | None


class Serving(_Figures):
    ttft_median_ms: float
    tpot_median_ms: float
    output_tok_s: float
    requests_failed: int
    concurrency: int
    vllm_metrics: dict[str, float]   # what vLLM's own /metrics saw during the load test


JUDGED = ("faithfulness", "answer_relevancy", "context_precision", "context_recall")   # ragas, by the LLM judge


class Rag(_Figures):
    questions: int
    passages: int
    top_k: int
    recall_at_k: Score
    recall_at_k_nan_rate: Score
    mrr: Score
    mrr_nan_rate: Score
    ndcg_at_k: Score
    ndcg_at_k_nan_rate: Score
    non_llm_context_recall: Score
    non_llm_context_recall_nan_rate: Score
    non_llm_context_precision: Score
    non_llm_context_precision_nan_rate: Score
    semantic_similarity: Score
    semantic_similarity_nan_rate: Score
    judged_questions: int | None = None   # the LLM-judged metrics below: only with evaluate.judge.ragas_size > 0
    faithfulness: Score = None
    faithfulness_nan_rate: Score = None
    answer_relevancy: Score = None
    answer_relevancy_nan_rate: Score = None
    context_precision: Score = None
    context_precision_nan_rate: Score = None
    context_recall: Score = None
    context_recall_nan_rate: Score = None

    @model_validator(mode="after")
    def _judged_together(self) -> Rag:
        given = {name for name in JUDGED if name in self.model_fields_set}
        if self.judged_questions is not None and given != set(JUDGED):
            raise ValueError(f"rag: LLM-judged on {self.judged_questions} questions but {sorted(set(JUDGED) - given)} "
                             "missing")
        if self.judged_questions is None and any(getattr(self, name) is not None for name in JUDGED):
            raise ValueError("rag: LLM-judged scores without judged_questions")
        return self


class Canaries(_Figures):
    probed: int
    exposed: int


class Calibration(_Figures):
    pairs: int
    accuracy: Score
    order_flip_rate: Score
    parse_failure_rate: Score
    accuracy_by_kind: dict[str, float]


class Judge(_Figures):
    judge: str
    opponent: str                  # "champion vN", or "base" before the first champion
    n: int
    wins: int
    losses: int
    ties: int
    failed: int
    win_rate: Score
    ci95: list[float] | None
    calibration: Calibration
    mean_answer_chars: dict[str, float | None]


class ServedPerplexity(_Figures):
    served: float
    # on the held-out rows the champion was evaluated on (tasks/release/next_round.py): forgetting. None before a
    # champion, or when it keeps none
    previous_held_out: float | None = None


class Perplexity(ServedPerplexity):
    """Held-out perplexity of the final reply: base, SFT and DPO in transformers, served = the candidate in vLLM."""
    base: float
    sft: float
    dpo: float


class Champion(_Figures):
    """The registry's champion, served and scored in the same run on the same rows: what the candidate must beat."""
    version: int
    ppl: ServedPerplexity
    rag: Rag
    benchmark: dict[str, TaskScore]   # task -> scores
    benchmark_acc: float
    rouge_l: float
    serving: Serving


class Evaluation(_Figures):
    ppl: Perplexity
    pref_accuracy: float                                 # DPO implicit reward prefers the chosen reply
    pref_likelihood_accuracy: dict[Literal["sft", "dpo"], float]
    benchmark: dict[str, dict[str, TaskScore]]           # model (base, sft, dpo, served) -> task -> scores
    benchmark_acc: float
    rouge_l: float
    rag: Rag
    serving: Serving
    canaries: Canaries | None                            # None: evaluate.canaries is 0
    champion: Champion | None                            # None: no champion yet
    judge: Judge | None                                  # None: the judge's sizes are all 0
    reward_judge: Judge | None = None                    # the reward model as a judge: with judge.size or calibration
    time_s: dict[str, float]

    def check_measured(self, cfg: EvaluateConfig, canaries_planted: int) -> Evaluation:
        """Each optional section present exactly when this run's params asked for it."""
        asked = {"canaries": canaries_planted > 0,
                 "judge": bool(cfg.judge.size or cfg.judge.calibration_size or cfg.judge.ragas_size),
                 "reward_judge": bool(cfg.judge.size or cfg.judge.calibration_size),
                 "rag.judged_questions": cfg.judge.ragas_size > 0}
        for key, wanted in asked.items():
            if (lookup(self, key) not in (None, ABSENT)) != wanted:
                raise MissingFigure(f"evaluate: {key} {'missing' if wanted else 'present'} though this run's params "
                                    f"{'asked' if wanted else 'did not ask'} for it")
        if self.champion and (self.champion.rag.judged_questions is None) != (self.rag.judged_questions is None):
            raise MissingFigure("evaluate: the champion's RAG answers were LLM-judged and the candidate's not, or the "
                                "other way round")
        return self


class MissingFigure(ValueError):
    pass


ABSENT = object()   # not measured in this run: its section is off


def lookup(results: BaseModel, key: str):
    """The figure at a dotted key: its value, None for a measurement with no score, ABSENT for one not made.
    A key the schema does not have is an error."""
    node = results
    for part in key.split("."):
        if node is None:
            return ABSENT
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            raise MissingFigure(f"{key}: {type(node).__name__} has no figure {part!r}")
        node = getattr(node, part)
    if key.startswith("rag.") and key.split(".")[1] in JUDGED and results.rag.judged_questions is None:
        return ABSENT
    return node


@dataclass(frozen=True)
class Figure:
    key: str                               # where it is in Evaluation (and in Champion, for vs_champion figures)
    label: str                             # how the report and the gates name it
    better: Literal["lower", "higher"]
    vs_champion: str | None = None         # its tolerance in gates.vs_champion: the candidate may not be worse
    tag: str | None = None                 # the registry version tag that carries it
    none_means: str = "no score on one side (NaN on every row)"   # why a gate on it is skipped when it is None


FIGURES = (
    Figure("ppl.base", "base ppl", "lower"),
    Figure("ppl.sft", "SFT ppl", "lower"),
    Figure("ppl.dpo", "DPO ppl", "lower"),
    Figure("ppl.served", "served ppl", "lower", "max_ppl_ratio", "eval.ppl_served"),
    Figure("ppl.previous_held_out", "served ppl on the champion's held-out rows", "lower", "max_forgetting_ppl_ratio",
           "eval.ppl_previous_held_out", "the champion keeps no held-out set (registered before versions kept it)"),
    Figure("pref_accuracy", "preference accuracy", "higher"),
    Figure("judge.win_rate", "judge win rate", "higher", tag="eval.judge_win_rate"),   # gated on its calibration
    Figure("reward_judge.win_rate", "reward judge win rate", "higher", tag="eval.reward_judge_win_rate"),
    Figure("rouge_l", "ROUGE-L", "higher", "max_rouge_l_drop", "eval.rouge_l"),
    Figure("rag.semantic_similarity", "RAG answer similarity", "higher", "max_rag_similarity_drop",
           "eval.rag_similarity"),
    Figure("rag.faithfulness", "RAG faithfulness (judged)", "higher", "max_faithfulness_drop"),
    Figure("rag.answer_relevancy", "RAG answer relevancy (judged)", "higher", "max_relevancy_drop"),
    Figure("rag.recall_at_k", "RAG recall@k", "higher"),
    Figure("benchmark_acc", "benchmark acc", "higher", "max_benchmark_acc_drop", "eval.benchmark_acc"),
    Figure("serving.ttft_median_ms", "TTFT p50 ms", "lower", "max_ttft_ratio", "eval.ttft_ms"),
    Figure("serving.tpot_median_ms", "TPOT p50 ms", "lower", "max_tpot_ratio", "eval.tpot_ms"),
    Figure("canaries.exposed", "canaries the served model completed", "lower"),
)
VS_CHAMPION = tuple(f for f in FIGURES if f.vs_champion)
HEADLINE = tuple(f.key for f in FIGURES)


def _schema_has(model: type[BaseModel] | None, key: str) -> bool:
    for part in key.split("."):
        field = model.model_fields.get(part) if model else None
        if field is None:
            return False
        inner = [a for a in (getattr(field.annotation, "__args__", None) or (field.annotation,))
                 if isinstance(a, type) and issubclass(a, BaseModel)]
        model = inner[0] if inner else None
    return True


def check_table(figures=FIGURES) -> None:
    """Every named figure exists in the schema (the champion's too, where it is compared) and every tolerance in
    gates.vs_champion: run at import, so a renamed figure fails everything that imports this module."""
    for f in figures:
        if not _schema_has(Evaluation, f.key):
            raise MissingFigure(f"figure {f.key!r} is not in the Evaluation schema")
        if f.vs_champion and not _schema_has(Champion, f.key):
            raise MissingFigure(f"figure {f.key!r} is compared with the champion, whose results do not have it")
        if f.vs_champion and f.vs_champion not in VsChampionConfig.model_fields:
            raise MissingFigure(f"figure {f.key!r}: gates.vs_champion has no {f.vs_champion!r}")


check_table()
