"""The one module of ours that talks to MLflow: experiment set-up, the run tree, what each stage logs, registry
versions and alias moves. Besides it, the HF Trainer writes its per-step training metrics into the stage's run
through its own MLflow callback (`report_to`, tasks/train/training.py), and tasks/ops/lineage_walk.py reads runs and
versions to say what made a model (it writes nothing).

Run tree: one parent run per pipeline run, one nested run per stage. The Prefect flow creates the parent and passes it
down. `dvc repro` runs each stage as its own process, so there the parent is found again by a key (git commit + the
bytes of params.yaml + the DVC experiment's name): stages run for the same code and settings land under the same
parent, and a resumed `dvc repro` continues the parent it started. `dvc exp run` gets a parent named after its
experiment. The parent carries every setting as a param and each stage's headline figures as metrics, so comparing
pipeline runs in the MLflow UI compares what differed and what came of it.
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import yaml
from mlflow.tracking import MlflowClient

from tasks.common.hardware import hardware_tags
from tasks.common.processes import owner_died, owner_tags
from tasks.common.redact import redact
from tasks.config import Config, TrackingConfig, flat_params, flatten


def configure(cfg: TrackingConfig) -> str:
    """Point MLflow at the project's store (a sqlite file and an artifact folder by default); returns experiment id."""
    uri = cfg.tracking_uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is None:
        # a tracking server (team mode, infra/team.sh) keeps artifacts where its --artifacts-destination says
        location = None
        if not uri.startswith(("http://", "https://")):
            artifacts = Path(cfg.artifact_root).resolve()
            artifacts.mkdir(parents=True, exist_ok=True)
            location = artifacts.as_uri()
        # the UI then opens on runs, metrics and models (its fine-tuning view), not on GenAI traces
        exp_id = mlflow.create_experiment(cfg.experiment, artifact_location=location,
                                          tags={"mlflow.experimentKind": "finetuning"})
    else:
        exp_id = experiment.experiment_id
    mlflow.set_experiment(experiment_id=exp_id)
    os.environ["MLFLOW_EXPERIMENT_NAME"] = cfg.experiment
    # HF's MLflow callback logs per-step metrics only: its ~180 trainer and model-config params would bury the
    # stage's declared settings in the UI's compare view (tasks/train/training.py keeps them as trainer_args.json)
    os.environ["MLFLOW_MAX_LOG_PARAMS"] = "0"
    return exp_id


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def params_hash(params_file: Path = Path("params.yaml")) -> str:
    return hashlib.sha1(params_file.read_bytes() if params_file.exists() else b"").hexdigest()[:16]


def _pipeline_key(params_file: Path) -> str:
    blob = f"{git_commit()} {params_hash(params_file)} {os.environ.get('DVC_EXP_NAME', '')}"
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@contextmanager
def pipeline_run(cfg: Config, launcher: str, params_file: Path = Path("params.yaml")) -> Iterator[str]:
    """The pipeline's parent run around what runs inside: FINISHED when it returns, FAILED when it raises (or is
    interrupted). The Prefect flow and `python -m tasks run` (one stage, as dvc repro runs it) both open it."""
    parent = start_pipeline(cfg, launcher, params_file)
    try:
        yield parent
    except BaseException:
        end_pipeline(parent, "FAILED")
        raise
    end_pipeline(parent)


def start_pipeline(cfg: Config, launcher: str, params_file: Path = Path("params.yaml")) -> str:
    """The parent run id for this pipeline run: found again by key (dvc repro's stages), or new."""
    exp_id = configure(cfg.tracking)
    client, key = MlflowClient(), _pipeline_key(params_file)
    mark_dead_runs(exp_id)
    if launcher == "dvc":
        found = client.search_runs([exp_id], f"tags.`pipeline.key` = '{key}' and tags.`pipeline.launcher` = 'dvc'",
                                   max_results=1, order_by=["attributes.start_time DESC"])
        if found:
            return found[0].info.run_id
    experiment = os.environ.get("DVC_EXP_NAME")   # set by `dvc exp run` for its stages
    # a name that tells runs apart in the UI's compare view: the experiment, or the launcher and the params' hash
    name = f"exp {experiment}" if experiment else f"pipeline-{launcher} {params_hash(params_file)[:8]}"
    run = client.create_run(exp_id, run_name=name, tags={
        "pipeline.key": key, "pipeline.launcher": launcher, "git.commit": git_commit(),
        "params.hash": params_hash(params_file), **({"dvc.experiment": experiment} if experiment else {}),
        **hardware_tags(), **owner_tags()})
    for name, value in redact(flatten(cfg.model_dump())).items():
        client.log_param(run.info.run_id, name, value)
    return run.info.run_id


def end_pipeline(parent_id: str, status: str = "FINISHED") -> None:
    MlflowClient().set_terminated(parent_id, status)


def mark_dead_runs(exp_id: str) -> list[str]:
    """Runs left RUNNING by a process that died without ending them (a SIGKILL, an OOM kill, a lost machine) are
    marked KILLED, with the reason as a tag, so the UI never shows them running forever. Returns their ids."""
    client = MlflowClient()
    dead = [run for run in client.search_runs([exp_id], "attributes.status = 'RUNNING'", max_results=1000)
            if owner_died(run.data.tags)]
    for run in dead:
        client.set_tag(run.info.run_id, "killed_reason", f"its process (pid {run.data.tags['process.pid']}) died "
                       "without ending the run; marked at the next pipeline start")
        client.set_terminated(run.info.run_id, "KILLED")
    if dead:
        print(f"marked {len(dead)} run(s) left RUNNING by dead processes as KILLED: "
              + ", ".join(r.info.run_name or r.info.run_id for r in dead))
    return [r.info.run_id for r in dead]


def dvc_hashes(stage: str, dvc_file: Path = Path("dvc.yaml"), lock_file: Path = Path("dvc.lock")) -> dict[str, str]:
    """md5 of each data input of a stage (of the upstream out holding it), as dvc.lock recorded it before this ran: the
    run can be traced to the exact data it consumed (`dvc.lock` of the matching commit holds the same hashes)."""
    if not (dvc_file.exists() and lock_file.exists()):
        return {}
    deps = (yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}).get(stage, {}).get("deps", [])
    recorded = {out["path"]: out.get("md5", "") for entry in (yaml.safe_load(lock_file.read_text()) or {})
                .get("stages", {}).values() for out in entry.get("outs", [])}
    return {f"dvc.input.{dep}": md5 for dep in deps for path, md5 in recorded.items()
            if dep == path or dep.startswith(path + "/")}


def active() -> bool:
    return mlflow.active_run() is not None


def data_versions(lock_file: Path = Path("dvc.lock")) -> dict[str, str]:
    """md5 of every data output dvc.lock records (`dvc.md5.<path>`): which data a registered model came from."""
    if not lock_file.exists():
        return {}
    return {f"dvc.md5.{out['path']}": out["md5"] for entry in (yaml.safe_load(lock_file.read_text()) or {})
            .get("stages", {}).values() for out in entry.get("outs", []) if out.get("md5")}


def _log_inputs(hashes: dict[str, str]) -> None:
    """Each DVC input as an MLflow dataset (the run's Datasets column): its path as source, its DVC md5 as digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    with warnings.catch_warnings():   # "can be interpreted in multiple ways": two local sources of the same class
        warnings.simplefilter("ignore", UserWarning)
        datasets = [MetaDataset(resolve_dataset_source(key.removeprefix("dvc.input.")),
                                name=key.removeprefix("dvc.input."), digest=md5[:36])
                    for key, md5 in hashes.items() if md5]
    if datasets:
        mlflow.log_inputs(datasets, contexts=["input"] * len(datasets), tags_list=[None] * len(datasets))


@contextmanager
def stage_run(cfg: Config, stage: str, parent_id: str, params: tuple[str, ...]) -> Iterator[str]:
    """A nested MLflow run for one stage, with the settings it reads (its declared params) as params, git/DVC
    lineage and the CPU as tags, and its DVC inputs as MLflow datasets."""
    configure(cfg.tracking)
    with mlflow.start_run(run_name=stage, parent_run_id=parent_id) as run:
        hashes = dvc_hashes(stage)
        mlflow.set_tags({"stage": stage, "git.commit": git_commit(), **hashes, **hardware_tags(), **owner_tags()})
        _log_inputs(hashes)
        mlflow.log_params({f"params.{key}": value for key, value in redact(flat_params(cfg, params)).items()})
        yield run.info.run_id


def log_results(metrics: dict, artifacts: list[Path]) -> None:
    """Numeric results as metrics, the rest as tags; existing artifact files and folders under their names."""
    flat = flatten(metrics)
    numeric = {k: float(v) for k, v in flat.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics(numeric)
    mlflow.set_tags({f"result.{k}": str(v)[:500] for k, v in redact(flat).items() if k not in numeric})
    for path in artifacts:
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=path.name)
        elif path.exists():
            mlflow.log_artifact(str(path))


def headline(metrics: dict, keys: tuple[str, ...], stage: str) -> dict[str, float]:
    """The named figures of a stage's results (dotted keys): DVC metrics and the parent's. A figure in a section this
    run switched off (None), or with no score (None, NaN), is left out; a name the results do not have at all is an
    error, so a renamed figure cannot silently drop out of every comparison."""
    found = {key: _figure(metrics, key, stage) for key in keys}
    return {k: round(v, 4) if isinstance(v, float) else int(v) for k, v in found.items()
            if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))}


def _figure(metrics: dict, key: str, stage: str):
    node = metrics
    for part in key.split("."):
        if node is None:
            return None
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"{stage}: headline figure {key!r} is not in its results (renamed?)")
        node = node[part]
    return node


def log_to_parent(parent_id: str, stage: str, figures: dict[str, float], metrics: dict) -> None:
    """A stage's headline on the pipeline's parent run as `<stage>.<figure>`, and the registry alias it earned as the
    `alias` tag: the MLflow UI's run comparison then lines pipeline runs up on the figures that matter."""
    client = MlflowClient()
    for name, value in figures.items():
        client.log_metric(parent_id, f"{stage}.{name}", value)
    if "alias" in metrics:
        client.set_tag(parent_id, "alias", metrics["alias"])


def register_model(name: str, model_dir: Path, alias: str, description: str,
                   tags: dict[str, str] | None = None) -> dict:
    """Log the served model folder to the current run, create a registry version from it and point `alias` at it.
    The version's tags say what made it: git commit, params hash, pipeline run, and the md5 of every DVC output."""
    mlflow.log_artifacts(str(model_dir), artifact_path="model")
    run = mlflow.active_run()
    parent = mlflow.get_run(run.info.run_id).data.tags.get("mlflow.parentRunId", "")
    tags = {"git.commit": git_commit(), "params.hash": params_hash(), "pipeline.run_id": parent, **data_versions(),
            **(tags or {})}
    client = MlflowClient()
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                          description=description, tags=tags)
    client.set_registered_model_alias(name, alias, version.version)
    return {"model": name, "version": int(version.version), "alias": alias,
            "uri": f"models:/{name}@{alias}"}


def log_folder(folder: Path, artifact_path: str) -> None:
    """A folder's files as one artifact folder of the current run."""
    mlflow.log_artifacts(str(folder), artifact_path=artifact_path)


def champion(name: str, alias: str = "champion") -> dict | None:
    """The registry version `alias` points at ({version, source, run_id, tags, description}), or None before the
    first champion."""
    try:
        return _version(MlflowClient().get_model_version_by_alias(name, alias))
    except mlflow.exceptions.MlflowException:
        return None


def model_version(name: str, version: int) -> dict | None:
    """{version, source, run_id, tags, description} of a registered version, or None when there is no such version."""
    try:
        return _version(MlflowClient().get_model_version(name, str(version)))
    except mlflow.exceptions.MlflowException:
        return None


def _version(found) -> dict:
    return {"version": int(found.version), "source": found.source, "run_id": found.run_id, "tags": dict(found.tags),
            "description": found.description}


def move_alias(name: str, version: int, tags: dict[str, str], alias: str = "champion") -> None:
    """Tag the version (the audit trail: tasks/release/promote.py), then point `alias` at it."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)
    client.set_registered_model_alias(name, alias, str(version))


def fetch_model(source: str, dest: Path) -> Path:
    """A registered model's files in a local folder (downloaded once; a version's files never change)."""
    if not dest.exists():   # renamed into place only once complete
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(partial))).rename(dest)
        shutil.rmtree(partial)
    return dest


def log_table(rows: list[dict], name: str) -> None:
    """Per-example rows as an MLflow table (the run's Artifacts and the Evaluation view), when a run is open."""
    if rows and active():
        mlflow.log_table({key: [row.get(key) for row in rows] for key in rows[0]}, artifact_file=name)


@contextmanager
def serving_run(name: str, alias: str, tags: dict[str, str]) -> Iterator[str]:
    """One MLflow run per `make serve`: the versions it served and vLLM's figures over time (`log_series`). Ended
    FINISHED on a clean stop; a SIGKILL leaves it to `mark_dead_runs` (its owner is recorded)."""
    with mlflow.start_run(run_name=f"serve {name}@{alias}") as run:
        mlflow.set_tags({"stage": "serve", "serve.alias": alias, **tags, **hardware_tags(), **owner_tags()})
        yield run.info.run_id


def log_series(metrics: dict[str, float], step: int) -> None:
    """Figures of one moment as points of time series (the run's metric charts), where a run is open."""
    if active():
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v == v}, step=step)   # v == v: not NaN
