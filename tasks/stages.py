"""The pipeline's stages in order, each declared once, and the one runner that the Prefect flow and `dvc repro` share.

A stage is its adapter (`_clean` below: reads its params, calls the plain stage function in tasks/<phase>/) and its
declaration: the dotted params.yaml keys it reads, the data it reads and writes, its plots and headline figures.
Everything else is derived from that: dvc.yaml (`python -m tasks dvc-yaml`, with each stage's code deps found by
following its imports: tasks/common/code_deps.py), the params MLflow records for it, and the view of the config it is
handed (tasks/config/__init__.py:ParamsView), which refuses any key it did not declare.

The runner opens the stage's MLflow run, times it, logs results and artifacts, writes everything it returned to
data/stages/<stage>.json and its headline to data/metrics/<stage>.json (DVC metrics: `dvc metrics show/diff`), and
puts the headline on the pipeline's parent run too, where the MLflow UI compares pipeline runs.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasks import tracking
from tasks.common.adapter_folder import BASE_FILE
from tasks.common.jsonl import write_json
from tasks.common.processes import exit_on_sigterm
from tasks.common.workspace_lock import workspace_lock
from tasks.config import ONLINE_METHODS, Config, ParamsView, apply_runtime_env, load_config
from tasks.evaluate.figures import HEADLINE as EVAL_HEADLINE
from tasks.paths import Paths


@dataclass(frozen=True)
class Out:
    """An output. Small files kept in git (reports, records) are not cached; the raw corpus is never pushed."""
    path: Path
    cache: bool = True
    push: bool = True


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[Config], dict]   # the adapter: gets a ParamsView of `params`, calls the stage's plain function
    params: tuple[str, ...]         # dotted params.yaml keys it reads: its DVC params and its MLflow params
    deps: tuple[Path, ...]          # data it reads; its code deps are derived from its imports
    outs: tuple[Out, ...]           # data it writes (its results and headline files are added: results_file/...)
    plots: tuple[Path, ...] = ()    # images kept in git, for `dvc plots`
    artifacts: tuple[Path, ...] = ()   # small outputs worth seeing in the MLflow UI
    retries: int = 0                # where a retry helps (a server that failed to start)
    report: Path | None = None      # its human-readable markdown, shown as a Prefect artifact
    headline: tuple[str, ...] = ("duration_s",)   # figures worth comparing across runs (flattened result keys)
    named_deps: Callable[[Config, Path], list[Path]] | None = None   # data its params name, in the project at root

    @property
    def results_file(self) -> Path:
        return Paths.stage_results / f"{self.name}.json"

    @property
    def metrics_file(self) -> Path:
        return Paths.stage_metrics / f"{self.name}.json"


def _base_model(cfg):
    from tasks.train.base_model import prepare_base_model
    # what vLLM decides servability on, not the whole section: a vllm.extra_args fix must not re-run training
    return prepare_base_model(cfg.base_model, serving=dict(
        python=cfg.vllm.python, dtype=cfg.vllm.dtype, max_model_len=cfg.vllm.max_model_len, env=cfg.vllm.env))


def _ingest(cfg):
    from tasks.data.canaries import make_canaries
    from tasks.data.ingest import ingest
    return ingest(cfg.ingest, canaries=make_canaries(cfg.evaluate.canaries, cfg.runtime.seed),
                  offline=cfg.runtime.offline)


def _local_sources(cfg: Config, root: Path) -> list[Path]:
    """Ingest's sources that are files or folders in the project: deps, so that editing data/raw/mine.jsonl
    re-ingests, and closing a feedback round re-ingests. The embedded package, a hub dataset and a path outside the
    project are none. A source added to
    params.yaml becomes one when `python -m tasks dvc-yaml` writes dvc.yaml again."""
    paths = [(Path(os.path.normpath(root / source.path)), source.kind == "feedback") for source in cfg.ingest.sources]
    # a feedback source's rounds folder is a dep before its first round is cut: the cut is what makes ingest stale
    return [path.relative_to(root) for path, rounds in paths if path.is_relative_to(root) and (rounds or path.exists())]


def _clean(cfg):
    from tasks.data.clean import clean
    return clean(cfg.clean, held_out_fraction=cfg.datasets.test_fraction)


def _datasets(cfg):
    from tasks.train.datasets import build_datasets, mix_weights
    return build_datasets(cfg.datasets, cfg.runtime.seed, weights=mix_weights(cfg.ingest.sources))


def _sft(cfg):
    from tasks.train.init_from import champion_start
    from tasks.train.sft import sft
    start = champion_start(cfg.tracking.registered_model) if cfg.sft.init_from == "champion" else None
    return sft(cfg.sft, cfg.runtime.seed, start=start)


def _pairs(cfg):
    from tasks.train.pairs import build_pairs
    return build_pairs(cfg.pairs, cfg.runtime.seed, cfg.datasets.test_fraction)


def _reward(cfg):
    from tasks.train.reward import train_reward_model
    return train_reward_model(cfg.reward, cfg.runtime.seed)


def _online_reward_model(cfg: Config, root: Path) -> list[Path]:
    """grpo/rloo score with the reward stage's model: a dep then, and only then (a DPO run does not re-run for it)."""
    return [Paths.reward_model] if cfg.dpo.method in ONLINE_METHODS else []


def _dpo(cfg):
    from tasks.train.dpo import dpo
    return dpo(cfg.dpo, cfg.runtime.seed)


def _quantize(cfg):
    from tasks.serve.quantize import merge_and_quantize
    return merge_and_quantize(cfg.quantize, lora=cfg.vllm.mode == "lora")


def _smoke_test(cfg):
    from tasks.serve.smoke_test import smoke_test
    return smoke_test(cfg.vllm)


def _evaluate(cfg):
    from tasks.data.canaries import make_canaries
    from tasks.evaluate.evaluate import evaluate
    return evaluate(cfg.evaluate, cfg.vllm, cfg.tracking.registered_model,
                    make_canaries(cfg.evaluate.canaries, cfg.runtime.seed), cfg.runtime.seed)


def _register(cfg):
    from tasks.data.canaries import make_canaries
    from tasks.release.register import register
    return register(cfg.gates, cfg.tracking.registered_model, stage_order=[s.name for s in STAGES],
                    canaries=make_canaries(cfg.evaluate.canaries, cfg.runtime.seed))


STAGES = [
    Stage("base_model", _base_model, ("base_model", "vllm.python", "vllm.dtype", "vllm.max_model_len", "vllm.env"),
          (), (Out(Paths.base_model),),
          artifacts=(Paths.base_model / "config.json",), headline=("parameters", "checkpoint_mb", "duration_s")),
    Stage("ingest", _ingest, ("ingest", "evaluate.canaries", "runtime.seed", "runtime.offline"), (),
          (Out(Paths.ingested.parent, push=False),),   # the raw corpus, PII and planted canaries included
          artifacts=(Paths.ingest_report,), headline=("rows_in", "rows_kept", "rows_quarantined", "duration_s"),
          named_deps=_local_sources),
    Stage("clean", _clean, ("clean", "datasets.test_fraction"), (Paths.ingested,), (Out(Paths.clean_dir),),
          artifacts=(Paths.clean_report, Paths.clean_report_md, Paths.clean_plots), report=Paths.clean_report_md,
          headline=("rows_in", "rows_kept", "rows_dropped", "rows_pii_scrubbed", "duration_s")),
    Stage("datasets", _datasets, ("datasets", "runtime.seed", "ingest.sources"), (Paths.clean, Paths.base_model),
          (Out(Paths.datasets_dir),), artifacts=(Paths.sft_test, Paths.pref_prompts_test),
          headline=("sft_train", "sft_test", "pref_prompts_train", "pref_prompts_test")),
    Stage("sft", _sft, ("sft", "runtime.seed", "tracking.registered_model"), (Paths.sft_train, Paths.sft_test, Paths.base_model),
          (Out(Paths.sft_adapter),), artifacts=(Paths.sft_adapter,),
          headline=("train_loss", "eval_loss", "tokens_per_s", "duration_s")),
    Stage("pairs", _pairs, ("pairs", "runtime.seed", "datasets.test_fraction"),
          (Paths.pref_prompts_train, Paths.pref_prompts_test, Paths.base_model, Paths.sft_adapter),
          (Out(Paths.pairs_dir),), artifacts=(Paths.pref_test,), headline=("pref_train", "duration_s")),
    Stage("reward", _reward, ("reward", "runtime.seed"),
          (Paths.pref_train, Paths.pref_test, Paths.sft_adapter, Paths.base_model), (Out(Paths.reward_model),),
          artifacts=tuple(Paths.reward_model / name for name in ("margins.png", "loss_curve.png",
                                                                  "held_out_scores.json")),
          headline=("held_out_accuracy", "held_out_margin_mean", "reward_length_correlation", "duration_s")),
    Stage("dpo", _dpo, ("dpo", "runtime.seed"), (Paths.pref_train, Paths.sft_adapter, Paths.base_model),
          (Out(Paths.dpo_adapter),), artifacts=(Paths.dpo_adapter,),
          headline=("train_loss", "last_reward_accuracy", "tokens_per_s", "duration_s"),
          named_deps=_online_reward_model),
    Stage("quantize", _quantize, ("quantize", "vllm.mode"),
          (Paths.base_model, Paths.dpo_adapter, Paths.sft_train, Paths.sft_test),
          (Out(Paths.merged), Out(Paths.quantized), Out(Paths.gguf)),
          artifacts=(Paths.quantized / "config.json", Paths.quantized / BASE_FILE),
          headline=("quantized_mb", "ppl_ratio", "duration_s")),
    Stage("smoke_test", _smoke_test, ("vllm",), (Paths.quantized,), (Out(Paths.smoke_test, cache=False),),
          artifacts=(Paths.smoke_test,), retries=1, headline=("startup_s", "smoke_latency_s")),
    Stage("evaluate", _evaluate, ("evaluate", "vllm", "tracking.registered_model", "runtime.seed"),
          (Paths.base_model, Paths.sft_adapter, Paths.dpo_adapter, Paths.quantized, Paths.sft_test, Paths.pref_test,
           Paths.reward_model),
          (Out(Paths.eval_dir / "answers.jsonl"), Out(Paths.eval_dir / "load_test.json"),
           Out(Paths.eval_dir / "benchmark"), Out(Paths.metrics, cache=False)),
          plots=(Paths.eval_dir / "perplexity.png",), artifacts=(Paths.eval_dir,), retries=1,
          headline=(*EVAL_HEADLINE, "duration_s")),
    Stage("register", _register, ("gates", "tracking.registered_model", "evaluate.canaries", "runtime.seed"),
          (Paths.metrics, Paths.stage_results / "quantize.json", Paths.stage_results / "reward.json",
           Paths.stage_results / "dpo.json", Paths.smoke_test,
           Paths.quantized, Paths.clean_report, Paths.dpo_adapter, Paths.base_model, Paths.sft_test),
          (Out(Paths.registry_report.parent, cache=False),),
          artifacts=(Paths.registry_report, Paths.run_report, Paths.vs_champion_plot), report=Paths.run_report,
          headline=("promoted", "version", "gates_failed", "gates_skipped")),
]
BY_NAME = {s.name: s for s in STAGES}


def run_stage(cfg: Config, stage: Stage, parent_id: str) -> dict:
    with workspace_lock(f"stage {stage.name}"), tracking.stage_run(cfg, stage.name, parent_id, stage.params):
        t0 = time.monotonic()
        metrics = stage.run(ParamsView(cfg, stage.params, stage.name))
        metrics["duration_s"] = round(time.monotonic() - t0, 1)
        write_json(stage.results_file, metrics)
        headline = tracking.headline(metrics, stage.headline, stage.name)
        write_json(stage.metrics_file, headline)
        tracking.log_results(metrics, list(stage.artifacts))
        tracking.log_to_parent(parent_id, stage.name, headline, metrics)
    return metrics


def carry_headline(stage: Stage, parent_id: str) -> None:
    """A stage DVC skipped as up to date still made this run's model: its headline as dvc.lock vouches for it
    (data/metrics/<stage>.json) goes on the parent too, so every pipeline run compares on every stage in the UI."""
    if stage.metrics_file.exists():
        tracking.log_to_parent(parent_id, stage.name, json.loads(stage.metrics_file.read_text()), {})


def main(argv: list[str]) -> int:
    """`python -m tasks run STAGE`: one stage, whatever DVC thinks of it; what dvc.yaml's commands call."""
    parser = argparse.ArgumentParser(prog="python -m tasks run", description=main.__doc__)
    parser.add_argument("stage", choices=list(BY_NAME))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="when another run holds this workspace, wait this long for it (default: refuse at once)")
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    apply_runtime_env(cfg)
    stage = BY_NAME[args.stage]
    if int(os.environ.get("RANK", "0")):   # under `accelerate launch`: every rank trains, rank 0 records
        stage.run(ParamsView(cfg, stage.params, stage.name))
        return 0
    exit_on_sigterm()
    with workspace_lock(f"python -m tasks run {stage.name}", wait_s=args.wait), \
            tracking.pipeline_run(cfg, "dvc", Path(args.params)) as parent:
        metrics = run_stage(cfg, stage, parent)
    print(json.dumps(metrics, indent=2, default=str))
    return 0
