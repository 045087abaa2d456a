"""Typed settings from params.yaml: the one module that reads it.

params.yaml is the one place where values live. These classes validate it and hold no values of their own: every
field is required, so a key missing from params.yaml fails loudly, as does an unknown or misspelled one, and no code
can build a configuration from defaults that differ from the pipeline's (tests/test_config.py proves both).
`ParamsView` is what a stage is handed: only the keys it declares in tasks/stages.py, which are also its DVC params and
its MLflow params.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_S = TypeVar("_S", bound=_Section)


class RuntimeConfig(_Section):
    offline: bool
    seed: int


class TrackingConfig(_Section):
    tracking_uri: str
    artifact_root: str
    experiment: str
    registered_model: str


class BaseModelConfig(_Section):
    source: str
    dtype: Literal["bfloat16", "float16", "float32"]


class IngestConfig(_Section):
    source: str
    max_records: int = Field(ge=0)


class QualityConfig(_Section):
    """Per-conversation filters (tasks/data/quality.py), Gopher/C4-style; thresholds tuned on chat data, not web pages."""
    min_chars: int                             # whole conversation, after whitespace normalisation
    max_chars: int
    require_assistant: bool
    trim_leading_replies: bool                 # start a chunk that opens mid-answer at its first user turn (audited)
    # Gopher statistics, per assistant reply with code blocks removed (replies under 50 words are not judged). Gopher's
    # web-page thresholds drop 25% of ShareGPT (lists, tables, songs people asked for); these drop loops and garble.
    max_symbol_word_ratio: float               # ('#' + '...') per word, headings excluded (Gopher: 0.1)
    max_duplicate_line_fraction: float         # characters in lines that repeat an earlier line (Gopher: 0.3)
    max_top_2gram_fraction: float              # characters covered by the most frequent word 2-gram (Gopher: 0.2)
    max_duplicate_5gram_fraction: float        # characters in repeated word 5-grams (Gopher: 0.15)
    min_mean_word_length: float                # Gopher: 3; maths, chess notation and number tables sit below 3
    max_mean_word_length: float
    languages: list[str]                       # ISO 639-1 codes to keep (py3langid); empty keeps every language
    min_language_score: float                  # probability of the detected language below which a row is dropped


class NormaliseConfig(_Section):
    """What near-dedup ignores before shingling (tasks/data/dedup.py), as datatrove's TextNormConfig: light edits (a
    comma, a particle's punctuation, a capital, a full-width digit) stop splitting near-duplicates. All on by default:
    of benchmarks/dedup.py's light-edit pairs, all off finds 45% (English) and 58% (Chinese), all on 100% and 99%, at
    precision 1.000. Whitespace is always collapsed: shingles are n-grams of words and of single CJK characters."""
    lowercase: bool                            # Unicode case folding
    punctuation: bool                          # punctuation and symbols (ASCII, CJK, full-width, emoji) become spaces
    digits: bool                               # numbers' digits become 0: 2023-01-05 = 1999-12-31; python3 stays
    width: bool                                # NFKC: full-width letters, digits, punctuation -> ASCII; ligatures split
    diacritics: bool                           # NFKD, then combining accents dropped: café = cafe


class NearDedupConfig(_Section):
    threshold: float = Field(gt=0, le=1)       # Jaccard of normalised shingle sets
    num_perm: int
    shingle_words: int = Field(ge=1)           # word n-grams
    # Character n-grams in CJK text, where each character is a token. Shorter than 5 because a particle is one
    # character that breaks n shingles: of benchmarks/dedup.py's Chinese light-edit pairs (2-4% of characters edited)
    # 5-grams find 95.4%, 4-grams 99.1%, 3-grams 99.9%, all at precision 1.000; 4 still spans two words or more.
    shingle_cjk_chars: int = Field(ge=1)
    normalise: NormaliseConfig
    keep: Literal["longest", "first"]          # which member of a duplicate cluster survives

    @field_validator("num_perm")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 2 or value & (value - 1):
            raise ValueError("num_perm must be a power of two (one-permutation MinHash uses it as its bin count)")
        return value


class DecontaminationConfig(_Section):
    """Drop training rows that contain an evaluation example's n-grams (tasks/data/decontaminate.py)."""
    ngram: int = Field(ge=1)                   # word n-grams, as in GPT-3's contamination study
    min_containment: float = Field(gt=0, le=1)  # fraction of an eval example's n-grams found in the row
    held_out: bool                             # the pipeline's own test split (datasets.test_fraction) is an eval set
    eval_sets: list[str]                       # more JSONL files (`messages` or `text` per line) to protect


PiiType = Literal["email", "phone", "ip_address", "credit_card", "iban", "us_ssn", "cn_resident_id", "secret",
                  "url_credentials"]


class PiiConfig(_Section):
    types: list[PiiType]
    phone_regions: list[str]                   # tried for numbers without a +country prefix
    ner_model: str | None                      # an installed spaCy model for presidio NER (names, places); None: off


class ExecutorConfig(_Section):
    """Where the per-chunk work (filters, fingerprints, signatures, PII) runs; the global steps run in the driver."""
    kind: Literal["local", "dask"]
    workers: int = Field(ge=1)                 # processes here (local), or LocalCluster workers (dask, no address)
    address: str | None                        # an existing Dask scheduler, e.g. tcp://10.0.0.5:8786
    chunk_mb: float = Field(gt=0)              # input bytes per task: bounds memory, the corpus is streamed


class ToxicityConfig(_Section):
    """tasks/data/toxicity.py: a conversation is dropped when a reply in `roles` matches the blocklist (built-in
    English and Chinese terms, plus `blocklist_file`) or alt-profanity-check scores it at least `threshold`."""
    enabled: bool
    threshold: float = Field(gt=0, le=1)       # 1: the blocklist alone ("kill the process with kill -9" scores 0.77)
    blocklist_file: str                        # more terms, one per line (see tasks/data/toxicity_blocklist.txt)
    roles: list[Literal["system", "user", "assistant"]]  # whose messages are judged


class PerplexityConfig(_Section):
    """tasks/data/perplexity.py: each conversation's assistant tokens scored by a small causal LM; the tail above
    `threshold` (when set) or above the corpus' `percentile` is dropped."""
    enabled: bool                              # off by default: a forward pass per conversation (see params.yaml)
    model: str                                 # any HF causal LM folder or hub id
    max_tokens: int = Field(ge=8)              # of each conversation, from its start, in the model's chat template
    batch_size: int = Field(ge=1)
    percentile: float = Field(gt=0, le=100)
    threshold: float = Field(ge=0)             # 0: the percentile decides


class CleanConfig(_Section):
    quality: QualityConfig
    toxicity: ToxicityConfig
    perplexity: PerplexityConfig
    near_dedup: NearDedupConfig
    decontamination: DecontaminationConfig
    pii: PiiConfig
    executor: ExecutorConfig


class DatasetsConfig(_Section):
    test_fraction: float = Field(gt=0, lt=1)
    max_tokens: int
    sft_train_size: int = Field(ge=0)
    sft_test_size: int = Field(ge=1)
    pref_train_size: int = Field(ge=1)
    pref_test_size: int = Field(ge=1)


class PairsConfig(_Section):
    """Preference pairs: rejected replies sampled from the SFT model, chosen and rejected on one token budget."""
    max_tokens: int = Field(ge=1)              # the budget: chosen cut to it, rejected sampled to chosen's length
    batch_size: int = Field(ge=1)
    temperature: float = Field(gt=0)
    top_p: float = Field(gt=0, le=1)
    user_pairs: str                            # a JSONL of prompt/chosen/rejected (message lists) to use instead


class TrainConfig(_Section):
    """What every training stage shares; tasks/train/training.py turns it into TRL/HF TrainingArguments."""
    max_steps: int
    per_device_batch_size: int
    grad_accum: int
    learning_rate: float
    max_length: int
    logging_steps: int
    save_steps: int = Field(ge=0)              # checkpoint every N steps outside DVC outs; a re-run resumes; 0 = off
    gradient_checkpointing: bool               # recompute activations in backward: less memory, slower steps
    adapter: Literal["lora", "qlora", "full"]  # qlora = 4-bit NF4 base (bitsandbytes), CUDA only


class SftConfig(TrainConfig):
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    target_modules: str | list[str]
    eval_steps: int
    packing: bool                              # best-fit packing of conversations into max_length rows, no padding


class DpoConfig(TrainConfig):
    """The preference stage. lora/qlora continue the SFT adapter (its r/alpha/targets); full trains every weight."""
    method: Literal["dpo", "orpo", "kto", "simpo"]  # simpo runs through TRL's CPO trainer
    beta: float                                # dpo/kto: KL strength; orpo: odds-ratio weight; simpo: reward scale
    simpo_gamma: float                         # simpo only: target reward margin


Scheme = Literal["W8A8", "W4A16", "W4A16-GPTQ", "none"]


class QuantizeConfig(_Section):
    scheme: Scheme
    group_size: int
    ignore: list[str]
    smoothing: float = Field(ge=0, lt=1)       # SmoothQuant's strength before W8A8; 0 = off
    calibration_samples: int = Field(ge=1)     # GPTQ's and SmoothQuant's, from the SFT training set
    compare: list[Scheme]
    gguf: Literal["", "F32", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"]
    gguf_pre: str


class VllmConfig(_Section):
    """Every vLLM server the project starts: smoke_test's, evaluate's (candidate, champion, judge) and `make serve`'s."""
    python: str
    # merged: the quantized merged checkpoint; lora: the base in the serving dtype + the DPO adapter, swapped at run
    # time by `make serve` (tasks/common/adapter_folder.py)
    mode: Literal["merged", "lora"]
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256]  # lora: the largest adapter rank the server accepts
    host: str
    port: int
    max_model_len: int
    enforce_eager: bool
    memory_utilization: float = Field(gt=0, le=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"]  # auto: fp32 on CPUs without native bf16
    startup_timeout_s: float
    request_timeout_s: float                   # one request, queueing included (a slow CPU at high concurrency)
    extra_args: list[str]
    env: dict[str, str]


class ServeConfig(_Section):
    """`make serve` (tasks/serve/serve_registry.py): a proxy at host:port in front of vLLM (run with the `vllm`
    settings), following a registry alias, with per-request caps and Prometheus figures logged to MLflow."""
    host: str
    port: int = Field(ge=0)                    # the proxy's port, stable across swaps (0 = a free port)
    poll_s: float = Field(gt=0)                # how often the alias is looked up in the registry
    drain_timeout_s: float = Field(gt=0)       # the old server finishes its requests for at most this long
    max_n: int = Field(ge=1)                   # caps per request, answered 400 above them (413 for the body size)
    max_tokens: int = Field(ge=1)              # also the limit a request that names none gets
    max_request_bytes: int = Field(ge=1024)
    metrics_interval_s: float = Field(gt=0)  # vLLM's /metrics scraped into MLflow time series this often
    cost_per_hour: float = Field(ge=0)         # what the machine costs, for cost per 1M tokens (0 = not logged)


class RagConfig(_Section):
    """RAG evaluation on the served endpoint (tasks/evaluate/rag.py); empty documents/questions: held-out replies."""
    documents: str                             # a folder of .md/.txt, or a JSONL with "text"
    questions: str                             # JSONL: question, reference, optional reference_contexts
    size: int = Field(ge=1)                    # questions asked
    passage_chars: int = Field(ge=20)
    top_k: int = Field(ge=1)
    max_tokens: int = Field(ge=1)
    prompt: str


class JudgeConfig(_Section):
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


class BenchmarkConfig(_Section):
    """lm-eval multiple choice (tasks/evaluate/benchmark.py); no tasks: one built from held-out conversations."""
    tasks: list[str]                           # lm-eval task names (mmlu, ceval-valid, cmmlu, ...), data in the HF cache
    limit: int = Field(ge=0)                   # questions per named task; 0 = all
    size: int = Field(ge=1)                    # questions in the held-out task
    choices: int = Field(ge=2)
    choice_chars: int = Field(ge=20)           # every choice cut to this length, so length gives nothing away


class EvaluateConfig(_Section):
    canaries: int = Field(ge=0)                # fake secrets planted at ingest, then looked for in every output (0: off)
    eval_size: int
    max_tokens: int
    concurrency: int
    load_prompts: int                          # held-out questions, cycled, through vLLM's benchmark client
    load_output_len: int                       # each asks for its real reply's length, at most this
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


class VsChampionConfig(_Section):
    """How much worse than the champion a candidate may be. Both are measured in the same evaluate run, on the same
    held-out rows and the same machine, so latency ratios compare like with like."""
    max_ppl_ratio: float                       # candidate served ppl <= champion's x this
    max_rouge_l_drop: float                    # candidate ROUGE-L >= champion's - this
    max_rag_similarity_drop: float             # RAG answers' semantic similarity to the references, the same way
    max_ttft_ratio: float                      # medians on a shared CPU move by tens of percent between runs
    max_tpot_ratio: float
    max_judge_win_rate_drop: float             # judge win rate vs the champion >= 0.5 - this (a tie is 0.5)
    max_faithfulness_drop: float               # ragas, LLM-judged, on the RAG answers of both
    max_relevancy_drop: float
    max_benchmark_acc_drop: float              # lm-eval acc, both served: 1 of the default 16 questions


class GatesConfig(_Section):
    max_ppl_ratio_vs_base: float
    max_quant_ppl_ratio: float                 # quantized / merged, one fp32 forward before and after (quantize stage)
    max_served_ppl_ratio: float                # vLLM's served ppl / transformers' quantized ppl: the engine serves it
    min_pref_accuracy: float
    min_rouge_l: float
    min_judge_calibration: float               # judge accuracy on planted pairs below this: its win rate does not gate
    vs_champion: VsChampionConfig
    promote: bool                              # false: `challenger` whatever the gates (CI on a pull request: unmerged code never ships)


class Config(_Section):
    runtime: RuntimeConfig
    tracking: TrackingConfig
    base_model: BaseModelConfig
    ingest: IngestConfig
    clean: CleanConfig
    datasets: DatasetsConfig
    sft: SftConfig
    pairs: PairsConfig
    dpo: DpoConfig
    quantize: QuantizeConfig
    vllm: VllmConfig
    serve: ServeConfig
    evaluate: EvaluateConfig
    gates: GatesConfig


TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "RAGAS_DO_NOT_TRACK": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _set(cfg: dict, dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        cfg = cfg.setdefault(key, {})
    cfg[leaf] = yaml.safe_load(value)


def load_config(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read params.yaml; `overrides` are `section.key=value` strings (torchtune-style) for tests and one-off runs."""
    raw = yaml.safe_load(Path(path).read_text()) or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form section.key=value")
        _set(raw, key, value)
    return Config.model_validate(raw)


def apply_runtime_env(cfg: Config) -> None:
    """Telemetry off and hub access per params; must run before transformers or mlflow is imported."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(Path(".prefect").resolve()))
    if cfg.runtime.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"


class UndeclaredParam(AttributeError):
    pass


class ParamsView:
    """The config as one stage sees it: the keys it declares (tasks/stages.py) and nothing else. Reading another key
    raises, so no stage depends on a setting that DVC does not track for it and MLflow does not record for it."""

    def __init__(self, node: BaseModel, keys: tuple[str, ...], stage: str, prefix: str = ""):
        self._node, self._keys, self._stage, self._prefix = node, keys, stage, prefix

    def __getattr__(self, name: str):
        path = f"{self._prefix}{name}"
        if path in self._keys:
            return getattr(self._node, name)
        if any(key.startswith(f"{path}.") for key in self._keys):
            return ParamsView(getattr(self._node, name), self._keys, self._stage, f"{path}.")
        raise UndeclaredParam(f"stage {self._stage!r} reads {path}, which its params in tasks/stages.py do not list "
                              f"({', '.join(self._keys)}): declare it, so that DVC and MLflow track it")


def changed(section: _S, **changes) -> _S:
    """`section` with `changes` (a nested section as a dict or a section, merged key by key), validated again:
    `model_copy(update=...)` would skip validation."""
    return type(section).model_validate(_merged(section.model_dump(), changes))


def _merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        value = value.model_dump() if isinstance(value, BaseModel) else value
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def value_at(cfg: BaseModel, dotted: str):
    """The value of a dotted key (`clean.near_dedup.threshold`), a section for a section's name."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def flat_params(cfg: Config, keys: tuple[str, ...]) -> dict[str, object]:
    """The leaves under each dotted key as {`section.key...`: value}: what MLflow records for a stage."""
    out = {}
    for key in keys:
        value = value_at(cfg, key)
        found = value.model_dump() if isinstance(value, BaseModel) else value
        out.update(flatten(found, key))
    return out


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts as {"a.b.c": leaf}, the way params, DVC and MLflow name a setting or a figure; an empty dict has
    no leaves."""
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, inner in value.items()
            for k, v in flatten(inner, f"{prefix}.{key}" if prefix else str(key)).items()}
