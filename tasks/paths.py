"""The fixed file layout every stage shares, relative to the project root (the working directory).

Paths are not settings: they are the contract between stages, and the stage list (tasks/stages.py) declares each
stage's inputs and outputs from them, which is what dvc.yaml is generated from.
"""
from __future__ import annotations

from pathlib import Path


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
    reward_model = data / "models" / "reward"
    merged = data / "models" / "merged"
    quantized = data / "models" / "quantized"
    gguf = data / "models" / "gguf"
    smoke_test = data / "smoke_test" / "result.json"   # the candidate served once: start time, one answer
    eval_dir = data / "eval"
    metrics = eval_dir / "metrics.json"
    champion_cache = Path(".cache") / "champion"   # registered versions fetched to be served beside the candidate
    registry_report = data / "registry" / "registration.json"
    run_report = data / "registry" / "report.md"
    vs_champion_plot = data / "registry" / "vs_champion.png"
    stage_results = data / "stages"    # everything each stage returned, read back by the run report and register
    stage_metrics = data / "metrics"   # each stage's few headline numbers: DVC metrics
    feedback = data / "feedback"       # what `make serve` recorded (tasks/data/feedback.py), scrubbed of PII
    feedback_live = feedback / "live"      # being written: not versioned, not read by any stage
    feedback_rounds = feedback / "rounds"  # closed rounds (`python -m tasks flywheel cut`): DVC-tracked, ingested
