"""Typed settings from params.yaml, and the fixed file layout every stage shares.

params.yaml is the one place for settings; this module is the one place that reads it. Unknown or misspelled keys
fail loudly (a typo must not silently fall back to a default). Paths are not settings: they are the contract between
stages and dvc.yaml, so they live here as constants.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuntimeConfig(_Section):
    offline: bool = True
    seed: int = 42
    threads: int = 0


class TrackingConfig(_Section):
    tracking_uri: str = "sqlite:///mlruns/mlflow.db"
    artifact_root: str = "mlruns/artifacts"
    experiment: str = "finetune-pipeline"
    registered_model: str = "smollm2-sharegpt"


class BaseModelConfig(_Section):
    source: str = "smollm2-gguf"
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"


class IngestConfig(_Section):
    source: str = "sharegpt-package"
    max_records: int = Field(0, ge=0)


class QualityConfig(_Section):
    """Per-conversation filters (tasks/data/quality.py), Gopher/C4-style; thresholds tuned on chat data, not web pages."""
    min_chars: int = 20                      # whole conversation, after whitespace normalisation
    max_chars: int = 20000
    require_assistant: bool = True
    trim_leading_replies: bool = True        # start a chunk that opens mid-answer at its first user turn (audited)
    # Gopher statistics, per assistant reply with code blocks removed (replies under 50 words are not judged). Gopher's
    # web-page thresholds drop 25% of ShareGPT (lists, tables, songs people asked for); these drop loops and garble.
    max_symbol_word_ratio: float = 1.0       # ('#' + '...') per word, headings excluded (Gopher: 0.1)
    max_duplicate_line_fraction: float = 0.5  # characters in lines that repeat an earlier line (Gopher: 0.3)
    max_top_2gram_fraction: float = 0.5      # characters covered by the most frequent word 2-gram (Gopher: 0.2)
    max_duplicate_5gram_fraction: float = 0.6  # characters in repeated word 5-grams (Gopher: 0.15)
    min_mean_word_length: float = 1.5        # Gopher: 3; maths, chess notation and number tables sit below 3
    max_mean_word_length: float = 10.0
    languages: list[str] = []                # ISO 639-1 codes to keep (py3langid); empty keeps every language
    min_language_score: float = 0.3          # probability of the detected language below which a row is dropped


class NormaliseConfig(_Section):
    """What near-dedup ignores before shingling (tasks/data/dedup.py), as datatrove's TextNormConfig: light edits (a
    comma, a particle's punctuation, a capital, a full-width digit) stop splitting near-duplicates. All on by default:
    of benchmarks/dedup.py's light-edit pairs, all off finds 45% (English) and 58% (Chinese), all on 100% and 99%, at
    precision 1.000. Whitespace is always collapsed: shingles are n-grams of words and of single CJK characters."""
    lowercase: bool = True                   # Unicode case folding
    punctuation: bool = True                 # punctuation and symbols (ASCII, CJK, full-width, emoji) become spaces
    digits: bool = True                      # numbers' digits become 0: 2023-01-05 = 1999-12-31; python3 stays
    width: bool = True                       # NFKC: full-width letters, digits, punctuation -> ASCII; ligatures split
    diacritics: bool = True                  # NFKD, then combining accents dropped: café = cafe


class NearDedupConfig(_Section):
    threshold: float = Field(0.8, gt=0, le=1)   # Jaccard of normalised shingle sets
    num_perm: int = 128
    shingle_words: int = Field(5, ge=1)      # word n-grams
    # Character n-grams in CJK text, where each character is a token. Shorter than 5 because a particle is one
    # character that breaks n shingles: of benchmarks/dedup.py's Chinese light-edit pairs (2-4% of characters edited)
    # 5-grams find 95.4%, 4-grams 99.1%, 3-grams 99.9%, all at precision 1.000; 4 still spans two words or more.
    shingle_cjk_chars: int = Field(4, ge=1)
    normalise: NormaliseConfig = NormaliseConfig()
    keep: Literal["longest", "first"] = "longest"   # which member of a duplicate cluster survives

    @field_validator("num_perm")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value < 2 or value & (value - 1):
            raise ValueError("num_perm must be a power of two (one-permutation MinHash uses it as its bin count)")
        return value


class DecontaminationConfig(_Section):
    """Drop training rows that contain an evaluation example's n-grams (tasks/data/decontaminate.py)."""
    ngram: int = Field(13, ge=1)             # word n-grams, as in GPT-3's contamination study
    min_containment: float = Field(0.5, gt=0, le=1)   # fraction of an eval example's n-grams found in the row
    held_out: bool = True                    # the pipeline's own test split (datasets.test_fraction) is an eval set
    eval_sets: list[str] = []                # more JSONL files (`messages` or `text` per line) to protect


PiiType = Literal["email", "phone", "ip_address", "credit_card", "iban", "us_ssn", "cn_resident_id", "secret",
                  "url_credentials"]


class PiiConfig(_Section):
    types: list[PiiType] = list(PiiType.__args__)
    phone_regions: list[str] = ["US", "GB", "DE", "FR", "IN", "CN"]   # tried for numbers without a +country prefix
    ner_model: str | None = None             # an installed spaCy model for presidio NER (names, places); None: off


class ExecutorConfig(_Section):
    """Where the per-chunk work (filters, fingerprints, signatures, PII) runs; the global steps run in the driver."""
    kind: Literal["local", "dask"] = "local"
    workers: int = Field(2, ge=1)            # processes here (local), or LocalCluster workers (dask, no address)
    address: str | None = None               # an existing Dask scheduler, e.g. tcp://10.0.0.5:8786
    chunk_mb: float = Field(8.0, gt=0)       # input bytes per task: bounds memory, the corpus is streamed


class ToxicityConfig(_Section):
    """tasks/data/toxicity.py: a conversation is dropped when a reply in `roles` matches the blocklist (built-in
    English and Chinese terms, plus `blocklist_file`) or alt-profanity-check scores it at least `threshold`."""
    enabled: bool = True
    threshold: float = Field(0.9, gt=0, le=1)   # 1: the blocklist alone ("kill the process with kill -9" scores 0.77)
    blocklist_file: str = ""                 # more terms, one per line (see tasks/data/toxicity_blocklist.txt)
    roles: list[Literal["system", "user", "assistant"]] = ["assistant"]   # whose messages are judged


class PerplexityConfig(_Section):
    """tasks/data/perplexity.py: each conversation's assistant tokens scored by a small causal LM; the tail above
    `threshold` (when set) or above the corpus' `percentile` is dropped."""
    enabled: bool = False                    # off by default: a forward pass per conversation (see params.yaml)
    model: str = "data/models/base"          # any HF causal LM folder or hub id
    max_tokens: int = Field(512, ge=8)       # of each conversation, from its start, in the model's chat template
    batch_size: int = Field(8, ge=1)
    percentile: float = Field(98, gt=0, le=100)
    threshold: float = Field(0, ge=0)        # 0: the percentile decides


class CleanConfig(_Section):
    quality: QualityConfig = QualityConfig()
    toxicity: ToxicityConfig = ToxicityConfig()
    perplexity: PerplexityConfig = PerplexityConfig()
    near_dedup: NearDedupConfig = NearDedupConfig()
    decontamination: DecontaminationConfig = DecontaminationConfig()
    pii: PiiConfig = PiiConfig()
    executor: ExecutorConfig = ExecutorConfig()


class DatasetsConfig(_Section):
    test_fraction: float = Field(0.05, gt=0, lt=1)
    max_tokens: int = 384
    sft_train_size: int = Field(512, ge=0)
    sft_test_size: int = Field(48, ge=1)
    pref_train_size: int = Field(64, ge=1)
    pref_test_size: int = Field(32, ge=1)


class PairsConfig(_Section):
    """Preference pairs: rejected replies sampled from the SFT model, chosen and rejected on one token budget."""
    max_tokens: int = Field(64, ge=1)        # the budget: chosen cut to it, rejected sampled to chosen's length
    batch_size: int = Field(8, ge=1)
    temperature: float = Field(0.7, gt=0)
    top_p: float = Field(0.9, gt=0, le=1)
    user_pairs: str = ""                     # a JSONL of prompt/chosen/rejected (message lists) to use instead


class TrainConfig(_Section):
    """What every training stage shares; tasks/train/training.py turns it into TRL/HF TrainingArguments."""
    max_steps: int = 40
    per_device_batch_size: int = 4
    grad_accum: int = 1
    learning_rate: float = 2e-4
    max_length: int = 384
    logging_steps: int = 2
    save_steps: int = Field(0, ge=0)         # checkpoint every N steps outside DVC outs; a re-run resumes; 0 = off
    gradient_checkpointing: bool = False     # recompute activations in backward: less memory, slower steps
    adapter: Literal["lora", "qlora", "full"] = "lora"   # qlora = 4-bit NF4 base (bitsandbytes), CUDA only


class SftConfig(TrainConfig):
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"
    eval_steps: int = 20
    packing: bool = False                    # best-fit packing of conversations into max_length rows, no padding


class DpoConfig(TrainConfig):
    """The preference stage. lora/qlora continue the SFT adapter (its r/alpha/targets); full trains every weight."""
    method: Literal["dpo", "orpo", "kto", "simpo"] = "dpo"   # simpo runs through TRL's CPO trainer
    learning_rate: float = 5e-5
    beta: float = 0.1                        # dpo/kto: KL strength; orpo: odds-ratio weight; simpo: reward scale
    simpo_gamma: float = 0.5                 # simpo only: target reward margin


Scheme = Literal["W8A8", "W4A16", "W4A16-GPTQ", "none"]


class QuantizeConfig(_Section):
    scheme: Scheme = "W8A8"
    group_size: int = 64
    ignore: list[str] = ["lm_head"]
    smoothing: float = Field(0.8, ge=0, lt=1)     # SmoothQuant's strength before W8A8; 0 = off
    calibration_samples: int = Field(32, ge=1)   # GPTQ's and SmoothQuant's, from the SFT training set
    compare: list[Scheme] = ["W4A16", "W4A16-GPTQ"]
    gguf: Literal["", "F32", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"] = "Q8_0"
    gguf_pre: str = "smollm"


class DeployConfig(_Section):
    python: str = ".venv-serve/bin/python"
    # merged: the quantized merged checkpoint; lora: the base in the serving dtype + the DPO adapter, swapped at run
    # time by `make serve` (tasks/common/adapter_folder.py)
    mode: Literal["merged", "lora"] = "merged"
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256] = 16   # lora: the largest adapter rank the server accepts
    host: str = "127.0.0.1"
    port: int = 0
    max_model_len: int = 1024
    enforce_eager: bool = True
    memory_utilization: float = Field(0.5, gt=0, le=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"   # auto: fp32 on CPUs without native bf16
    startup_timeout_s: float = 300
    request_timeout_s: float = 600           # one request, queueing included (a slow CPU at high concurrency)
    extra_args: list[str] = []
    env: dict[str, str] = {}


class ServeConfig(_Section):
    """`make serve` (tasks/serve/serve_registry.py): a proxy at host:port in front of vLLM (run with `deploy`'s
    settings), following a registry alias, with per-request caps and Prometheus figures logged to MLflow."""
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0)            # the proxy's port, stable across swaps (0 = a free port)
    poll_s: float = Field(10, gt=0)          # how often the alias is looked up in the registry
    drain_timeout_s: float = Field(600, gt=0)   # the old server finishes its requests for at most this long
    max_n: int = Field(4, ge=1)              # caps per request, answered 400 above them (413 for the body size)
    max_tokens: int = Field(512, ge=1)       # also the limit a request that names none gets
    max_request_bytes: int = Field(256 * 1024, ge=1024)
    metrics_interval_s: float = Field(15, gt=0)   # vLLM's /metrics scraped into MLflow time series this often
    cost_per_hour: float = Field(0.0, ge=0)  # what the machine costs, for cost per 1M tokens (0 = not logged)


class RagConfig(_Section):
    """RAG evaluation on the served endpoint (tasks/evaluate/rag.py); empty documents/questions: held-out replies."""
    documents: str = ""                      # a folder of .md/.txt, or a JSONL with "text"
    questions: str = ""                      # JSONL: question, reference, optional reference_contexts
    size: int = Field(16, ge=1)              # questions asked
    passage_chars: int = Field(400, ge=20)
    top_k: int = Field(3, ge=1)
    max_tokens: int = Field(64, ge=1)
    prompt: str = "Answer the question using the context.\n\nContext:\n{context}\n\nQuestion: {question}"


class JudgeConfig(_Section):
    """The LLM judge (tasks/evaluate/judge.py): pairwise verdicts, their calibration, and ragas' LLM-judged metrics."""
    base_url: str = ""                       # an OpenAI-compatible endpoint (".../v1"); "" = serve `model_dir` here
    model: str = ""                          # the model name that endpoint serves
    api_key_env: str = ""                    # the environment variable holding its key (never the key itself)
    model_dir: str = ""                      # the local judge vLLM serves when base_url is ""; "" = the base model
    size: int = Field(8, ge=0)               # held-out prompts: candidate vs champion (the base before one), 2 orders
    calibration_size: int = Field(3, ge=0)   # held-out prompts, each planted into 5 pairs with a known better reply
    max_answer_chars: int = Field(600, ge=20)   # each answer as the judge reads it
    ragas_size: int = Field(1, ge=0)         # RAG questions scored by ragas' LLM-judged metrics, per served model
    ragas_max_tokens: int = Field(192, ge=16)   # the judge's output budget for one ragas structured answer
    max_model_len: int = Field(4096, ge=512)    # the judge server's context: ragas prompts carry few-shot examples


class BenchmarkConfig(_Section):
    """lm-eval multiple choice (tasks/evaluate/benchmark.py); no tasks: one built from held-out conversations."""
    tasks: list[str] = []                    # lm-eval task names (mmlu, ceval-valid, cmmlu, ...), data in the HF cache
    limit: int = Field(0, ge=0)              # questions per named task; 0 = all
    size: int = Field(16, ge=1)              # questions in the held-out task
    choices: int = Field(4, ge=2)
    choice_chars: int = Field(200, ge=20)    # every choice cut to this length, so length gives nothing away


class EvaluateConfig(_Section):
    canaries: int = Field(8, ge=0)           # fake secrets planted at ingest, then looked for in every output (0: off)
    eval_size: int = 32
    max_tokens: int = 96
    concurrency: int = 4
    load_prompts: int = 32                   # held-out questions, cycled, through vLLM's benchmark client
    load_output_len: int = 64                # each asks for its real reply's length, at most this
    rag: RagConfig = RagConfig()
    judge: JudgeConfig = JudgeConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()

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
    max_ppl_ratio: float = 1.02              # candidate served ppl <= champion's x this
    max_rouge_l_drop: float = 0.02           # candidate ROUGE-L >= champion's - this
    max_rag_similarity_drop: float = 0.03    # RAG answers' semantic similarity to the references, the same way
    max_ttft_ratio: float = 1.5              # medians on a shared CPU move by tens of percent between runs
    max_tpot_ratio: float = 1.25
    max_judge_win_rate_drop: float = 0.1     # judge win rate vs the champion >= 0.5 - this (a tie is 0.5)
    max_faithfulness_drop: float = 0.05      # ragas, LLM-judged, on the RAG answers of both
    max_relevancy_drop: float = 0.05
    max_benchmark_acc_drop: float = 0.07     # lm-eval acc, both served: 1 of the default 16 questions


class GatesConfig(_Section):
    max_ppl_ratio_vs_base: float = 1.10
    max_quant_ppl_ratio: float = 1.05        # quantized / merged, one fp32 forward before and after (quantize stage)
    max_served_ppl_ratio: float = 1.10       # vLLM's served ppl / transformers' quantized ppl: the engine serves it
    min_pref_accuracy: float = 0.5
    min_rouge_l: float = 0.0
    min_judge_calibration: float = 0.75      # judge accuracy on planted pairs below this: its win rate does not gate
    vs_champion: VsChampionConfig = VsChampionConfig()
    promote: bool = True     # false: `challenger` whatever the gates (CI on a pull request: unmerged code never ships)


class Config(_Section):
    runtime: RuntimeConfig = RuntimeConfig()
    tracking: TrackingConfig = TrackingConfig()
    base_model: BaseModelConfig = BaseModelConfig()
    ingest: IngestConfig = IngestConfig()
    clean: CleanConfig = CleanConfig()
    datasets: DatasetsConfig = DatasetsConfig()
    sft: SftConfig = SftConfig()
    pairs: PairsConfig = PairsConfig()
    dpo: DpoConfig = DpoConfig()
    quantize: QuantizeConfig = QuantizeConfig()
    deploy: DeployConfig = DeployConfig()
    serve: ServeConfig = ServeConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    gates: GatesConfig = GatesConfig()


class Paths:
    """Where each stage reads and writes, relative to the project root (the working directory)."""

    data = Path("data")
    base_model = data / "models" / "base"
    ingested = data / "ingested" / "conversations.jsonl"
    quarantine = data / "ingested" / "quarantine.jsonl"
    ingest_report = data / "ingested" / "report.json"
    clean_dir = data / "clean"
    clean = clean_dir / "conversations.jsonl"
    audit = clean_dir / "audit.jsonl"        # every dropped or modified row, with stage and reason
    clean_report = clean_dir / "report.json"
    clean_report_md = clean_dir / "report.md"
    clean_plots = clean_dir / "plots"
    datasets_dir = data / "datasets"
    sft_train = datasets_dir / "sft_train.jsonl"
    sft_test = datasets_dir / "sft_test.jsonl"
    pref_prompts_train = datasets_dir / "pref_prompts_train.jsonl"
    pref_prompts_test = datasets_dir / "pref_prompts_test.jsonl"
    pairs_dir = data / "pairs"
    pref_train = pairs_dir / "pref_train.jsonl"
    pref_test = pairs_dir / "pref_test.jsonl"
    sft_adapter = data / "models" / "sft_adapter"
    dpo_adapter = data / "models" / "dpo_adapter"
    merged = data / "models" / "merged"
    quantized = data / "models" / "quantized"
    gguf = data / "models" / "gguf"
    deploy_report = data / "deploy" / "deployment.json"
    eval_dir = data / "eval"
    metrics = eval_dir / "metrics.json"
    champion_cache = Path(".cache") / "champion"   # registered versions fetched to be served beside the candidate
    registry_report = data / "registry" / "registration.json"
    run_report = data / "registry" / "report.md"
    vs_champion_plot = data / "registry" / "vs_champion.png"
    stage_results = data / "stages"    # everything each stage returned, read back by the run report and register
    stage_metrics = data / "metrics"   # each stage's few headline numbers: DVC metrics


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
