"""The pipeline's stages in order, and the one runner that both the Prefect flow and `dvc repro` go through.

Each stage is its plain function (tasks/<phase>/<stage>.py) bound to its config section. The runner opens the stage's MLflow
run, times it, logs results and artifacts, writes everything it returned to data/stages/<stage>.json and its few
headline numbers to data/metrics/<stage>.json (DVC metrics: `dvc metrics show/diff` stay readable), and puts the
headline on the pipeline's parent run too, where the MLflow UI compares pipeline runs.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tasks import tracking
from tasks.common.adapter_folder import BASE_FILE
from tasks.common.jsonl import write_json
from tasks.config import Config, Paths


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Config], dict]
    sections: tuple[str, ...]                         # config sections it reads: MLflow params, DVC params
    artifacts: tuple[Path, ...] = field(default=())   # small outputs worth seeing in the MLflow UI
    retries: int = 0                                  # where a retry helps (a server that failed to start)
    report: Path | None = None                        # its human-readable markdown, shown as a Prefect artifact
    headline: tuple[str, ...] = ("duration_s",)       # its figures worth comparing across runs (flattened keys)


def _base_model(cfg):
    from tasks.train.base_model import prepare_base_model
    return prepare_base_model(cfg.base_model)


def _ingest(cfg):
    from tasks.data.canaries import make_canaries
    from tasks.data.ingest import ingest
    return ingest(cfg.ingest, canaries=make_canaries(cfg.evaluate.canaries, cfg.runtime.seed))


def _clean(cfg):
    from tasks.data.clean import clean
    return clean(cfg.clean, held_out_fraction=cfg.datasets.test_fraction)


def _datasets(cfg):
    from tasks.train.datasets import build_datasets
    return build_datasets(cfg.datasets, cfg.runtime.seed)


def _sft(cfg):
    from tasks.train.sft import sft
    return sft(cfg.sft, cfg.runtime.seed)


def _pairs(cfg):
    from tasks.train.pairs import build_pairs
    return build_pairs(cfg.pairs, cfg.runtime.seed, cfg.datasets.test_fraction)


def _dpo(cfg):
    from tasks.train.dpo import dpo
    return dpo(cfg.dpo, cfg.runtime.seed)


def _quantize(cfg):
    from tasks.serve.quantize import merge_and_quantize
    return merge_and_quantize(cfg.quantize, lora=cfg.deploy.mode == "lora")


def _deploy(cfg):
    from tasks.serve.deploy import deploy
    return deploy(cfg.deploy)


def _evaluate(cfg):
    from tasks.data.canaries import make_canaries
    from tasks.evaluate.evaluate import evaluate
    return evaluate(cfg.evaluate, cfg.deploy, cfg.tracking.registered_model,
                    make_canaries(cfg.evaluate.canaries, cfg.runtime.seed), cfg.runtime.seed)


def _register(cfg):
    from tasks.data.canaries import make_canaries
    from tasks.release.register import register
    return register(cfg.gates, cfg.tracking.registered_model, stage_order=[s.name for s in STAGES],
                    canaries=make_canaries(cfg.evaluate.canaries, cfg.runtime.seed))


STAGES = [
    Stage("base_model", _base_model, ("base_model",), (Paths.base_model / "config.json",),
          headline=("parameters", "checkpoint_mb", "duration_s")),
    Stage("ingest", _ingest, ("ingest",), (Paths.ingest_report,),
          headline=("rows_in", "rows_kept", "rows_quarantined", "duration_s")),
    Stage("clean", _clean, ("clean",), (Paths.clean_report, Paths.clean_report_md, Paths.clean_plots),
          report=Paths.clean_report_md,
          headline=("rows_in", "rows_kept", "rows_dropped", "rows_pii_scrubbed", "duration_s")),
    Stage("datasets", _datasets, ("datasets", "runtime"), (Paths.sft_test, Paths.pref_prompts_test),
          headline=("sft_train", "sft_test", "pref_prompts_train", "pref_prompts_test")),
    Stage("sft", _sft, ("sft",), (Paths.sft_adapter,),
          headline=("train_loss", "eval_loss", "tokens_per_s", "duration_s")),
    Stage("pairs", _pairs, ("pairs", "runtime"), (Paths.pref_test,), headline=("pref_train", "duration_s")),
    Stage("dpo", _dpo, ("dpo",), (Paths.dpo_adapter,),
          headline=("train_loss", "last_reward_accuracy", "tokens_per_s", "duration_s")),
    Stage("quantize", _quantize, ("quantize",), (Paths.quantized / "config.json", Paths.quantized / BASE_FILE),
          headline=("quantized_mb", "ppl_ratio", "duration_s")),
    Stage("deploy", _deploy, ("deploy",), (Paths.deploy_report,), retries=1,
          headline=("startup_s", "smoke_latency_s")),
    Stage("evaluate", _evaluate, ("evaluate", "tracking"), (Paths.eval_dir,), retries=1,
          headline=("ppl.base", "ppl.sft", "ppl.dpo", "ppl.served", "pref_accuracy", "judge.win_rate",
                    "rag.semantic_similarity", "rag.answer_relevancy", "rag.faithfulness", "rag.recall_at_k",
                    "benchmark_acc", "rouge_l", "serving.ttft_median_ms", "serving.tpot_median_ms",
                    "canaries.exposed", "duration_s")),
    Stage("register", _register, ("gates",), (Paths.registry_report, Paths.run_report, Paths.vs_champion_plot),
          report=Paths.run_report, headline=("promoted", "version", "gates_failed", "gates_skipped")),
]
BY_NAME = {s.name: s for s in STAGES}


def run_stage(cfg: Config, stage: Stage, parent_id: str) -> dict:
    with tracking.stage_run(cfg, stage.name, parent_id, stage.sections):
        t0 = time.monotonic()
        metrics = stage.run(cfg)
        metrics["duration_s"] = round(time.monotonic() - t0, 1)
        write_json(Paths.stage_results / f"{stage.name}.json", metrics)
        headline = tracking.headline(metrics, stage.headline)
        write_json(Paths.stage_metrics / f"{stage.name}.json", headline)
        tracking.log_results(metrics, list(stage.artifacts))
        tracking.log_to_parent(parent_id, stage.name, headline, metrics)
    return metrics


def carry_headline(stage: Stage, parent_id: str) -> None:
    """A stage DVC skipped as up to date still made this run's model: its headline as dvc.lock vouches for it
    (data/metrics/<stage>.json) goes on the parent too, so every pipeline run compares on every stage in the UI."""
    path = Paths.stage_metrics / f"{stage.name}.json"
    if path.exists():
        tracking.log_to_parent(parent_id, stage.name, json.loads(path.read_text()), {})
