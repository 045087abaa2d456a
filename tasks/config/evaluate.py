"""The evaluation sections of params.yaml: evaluate and gates (tasks/evaluate/, tasks/release/)."""
from __future__ import annotations

from pydantic import Field, model_validator

from tasks.config.section import Count, Fraction, Positive, Ratio, Section


class RagConfig(Section):
    """RAG evaluation on the served endpoint (tasks/evaluate/rag.py); empty documents/questions: held-out replies."""
    documents: str                             # a folder of .md/.txt, or a JSONL with "text"
    questions: str                             # JSONL: question, reference, optional reference_contexts
    size: int = Field(ge=1)                    # questions asked
    passage_chars: int = Field(ge=20)
    top_k: int = Field(ge=1)
    max_tokens: int = Field(ge=1)
    prompt: str


class JudgeConfig(Section):
    """The LLM judge (tasks/evaluate/judge.py): pairwise verdicts, their calibration, and ragas' LLM-judged metrics."""
    base_url: str                              # an OpenAI-compatible endpoint (".../v1"); "" = serve `model_dir` here
    model: str                                 # the model name that endpoint serves
    api_key_env: str                           # the environment variable holding its key (never the key itself)
    model_dir: str                             # the local judge vLLM serves when base_url is ""; "" = the base model
    size: int = Field(ge=0)                    # held-out prompts: candidate vs champion (the base before one), 2 orders
    calibration_size: int = Field(ge=0)        # held-out prompts, each planted into 5 pairs with a known better reply
    max_answer_chars: int = Field(ge=20)       # each answer as the judge reads it
    ragas_size: int = Field(ge=0)              # RAG questions scored by ragas' LLM-judged metrics, per served model
    ragas_max_tokens: int = Field(ge=16)       # the judge's output budget for one ragas structured answer
    max_model_len: int = Field(ge=512)         # the judge server's context: ragas prompts carry few-shot examples


class BenchmarkConfig(Section):
    """lm-eval multiple choice (tasks/evaluate/benchmark.py); no tasks: one built from held-out conversations."""
    tasks: list[str]                           # lm-eval task names (mmlu, ceval-valid, cmmlu, ...), data in the HF cache
    limit: int = Field(ge=0)                   # questions per named task; 0 = all
    size: int = Field(ge=1)                    # questions in the held-out task
    choices: int = Field(ge=2)
    choice_chars: int = Field(ge=20)           # every choice cut to this length, so length gives nothing away


class EvaluateConfig(Section):
    canaries: int = Field(ge=0)                # fake secrets planted at ingest, then looked for in every output (0: off)
    eval_size: Positive
    max_tokens: Positive
    concurrency: Positive
    load_prompts: Count                        # held-out questions, cycled, through vLLM's benchmark client
    load_output_len: Positive                       # each asks for its real reply's length, at most this
    rag: RagConfig
    judge: JudgeConfig
    benchmark: BenchmarkConfig

    @model_validator(mode="after")
    def _judged_answers_exist(self) -> EvaluateConfig:
        if self.judge.size > self.eval_size:
            raise ValueError(f"evaluate.judge.size ({self.judge.size}) > evaluate.eval_size ({self.eval_size}): "
                             "the judge reads answers the served models gave")
        if self.judge.ragas_size > self.rag.size:
            raise ValueError(f"evaluate.judge.ragas_size ({self.judge.ragas_size}) > evaluate.rag.size "
                             f"({self.rag.size})")
        return self


class VsChampionConfig(Section):
    """How much worse than the champion a candidate may be. Both are measured in the same evaluate run, on the same
    held-out rows and the same machine, so latency ratios compare like with like."""
    max_ppl_ratio: Ratio                       # candidate served ppl <= champion's x this
    max_forgetting_ppl_ratio: Ratio            # the same on the champion's own held-out set (tasks/release/next_round.py)
    max_rouge_l_drop: Fraction                 # candidate ROUGE-L >= champion's - this
    max_rag_similarity_drop: Fraction          # RAG answers' semantic similarity to the references, the same way
    max_ttft_ratio: Ratio                      # medians on a shared CPU move by tens of percent between runs
    max_tpot_ratio: Ratio
    max_judge_win_rate_drop: Fraction          # judge win rate vs the champion >= 0.5 - this (a tie is 0.5)
    max_faithfulness_drop: Fraction            # ragas, LLM-judged, on the RAG answers of both
    max_relevancy_drop: Fraction
    max_benchmark_acc_drop: Fraction           # lm-eval acc, both served: 1 of the default 16 questions


class GatesConfig(Section):
    max_ppl_ratio_vs_base: Ratio
    max_quant_ppl_ratio: Ratio                 # quantized / merged, one fp32 forward before and after (quantize stage)
    max_served_ppl_ratio: Ratio                # vLLM's served ppl / transformers' quantized ppl: the engine serves it
    min_pref_accuracy: Fraction
    min_rouge_l: Fraction
    min_judge_calibration: Fraction            # judge accuracy on planted pairs below this: its win rate does not gate
    vs_champion: VsChampionConfig
    promote: bool                              # false: `challenger` whatever the gates (CI on a pull request: unmerged code never ships)
