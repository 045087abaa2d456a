"""The chain behind a registered model version, read from MLflow only (nothing is written to the store).

The registry version's tags say which pipeline run registered it, the git commit, the params hash and the md5 of
every DVC output at that moment; that pipeline run has one run per stage, each with its git commit, params and the
md5 of the DVC data it consumed. A stage DVC found up to date has no run in that pipeline run: its outputs were made
by an earlier one. That run is the latest FINISHED run of the stage that consumed the data the version records and
whose outputs are known to be the version's: a later stage of its own pipeline run consumed them (`dvc.input.*`
tags) or a version registered from that pipeline run recorded them (`dvc.md5.*`), with the same md5s. A newer run
of the stage that made other data is passed over: the version's data came from the older one.
"""
from __future__ import annotations

import json
import math
import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mlflow.entities import Run
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tasks.ops.lineage_check import owner

CLEAN_COUNTS = ("rows_in", "rows_kept", "rows_dropped", "rows_pii_scrubbed")
SMOKE_FIELDS = ("dtype", "model_dir", "smoke_prompt", "smoke_answer", "mode")


class LineageError(RuntimeError):
    pass


def open_store(uri: str) -> MlflowClient:
    """The project's store, never created here: a missing sqlite file is an error, not a fresh empty store. A relative
    sqlite path is made absolute (MLflow keeps one store per URI string in a process)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.exists():
            raise LineageError(f"no MLflow store at {path}: run the pipeline first")
        uri = f"sqlite:///{path.resolve()}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def resolve(client: MlflowClient, name: str, target: str | None) -> ModelVersion:
    """`models:/NAME@ALIAS`, `models:/NAME/VERSION` or a version number of params' registered model."""
    target = target or f"models:/{name}@champion"
    uri = re.fullmatch(r"models:/([^/@]+)(?:@([\w-]+)|/(\d+))", target)
    try:
        if target.removeprefix("v").isdigit():
            return client.get_model_version(name, target.removeprefix("v"))
        if uri:
            model, alias, number = uri.groups()
            return client.get_model_version_by_alias(model, alias) if alias else client.get_model_version(model, number)
    except MlflowException as err:
        raise LineageError(f"{target}: {err.message}") from err
    raise LineageError(f"{target!r} names no model version: give models:/NAME@ALIAS, models:/NAME/VERSION or VERSION")


@dataclass
class Runs:
    """Read-only views of one experiment's runs, each parent's children fetched once."""
    client: MlflowClient
    experiment_id: str
    model: str
    _children: dict[str, list[Run]] = field(default_factory=dict)
    _runs: dict[str, Run] = field(default_factory=dict)
    _versions: list[ModelVersion] | None = None

    def run(self, run_id: str) -> Run:
        if run_id not in self._runs:
            self._runs[run_id] = self.client.get_run(run_id)
        return self._runs[run_id]

    def children(self, parent_id: str | None) -> list[Run]:
        if not parent_id:
            return []
        if parent_id not in self._children:
            self._children[parent_id] = self.client.search_runs(
                [self.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                order_by=["attributes.start_time ASC"])
        return self._children[parent_id]

    def finished(self, stage: str, before_ms: int) -> list[Run]:
        """FINISHED runs of a stage started before `before_ms`, newest first."""
        runs = self.client.search_runs([self.experiment_id],
                                       f"tags.stage = '{stage}' and attributes.status = 'FINISHED'",
                                       order_by=["attributes.start_time DESC"])
        return [r for r in runs if r.info.start_time < before_ms]

    def versions(self, parent_id: str) -> list[ModelVersion]:
        if self._versions is None:
            self._versions = list(self.client.search_model_versions(f"name = '{self.model}'"))
        return [v for v in self._versions if v.tags.get("pipeline.run_id") == parent_id]


def _inputs(run: Run, outputs) -> dict[str, str]:
    """The DVC data a stage run consumed, by the output holding each dependency: {output path: md5}."""
    return {owner(key.removeprefix("dvc.input."), outputs) or key.removeprefix("dvc.input."): md5
            for key, md5 in run.data.tags.items() if key.startswith("dvc.input.")}


def seen_outputs(runs: Runs, run: Run, outs: list[str], declared: dict) -> dict[str, tuple[str, str]]:
    """What became of a stage run's outputs in its own pipeline run, up to that stage's next run there: the md5 each
    later stage consumed, and the md5 each version registered from it recorded. {output: (md5, seen by)}."""
    stage, start = run.data.tags.get("stage"), run.info.start_time
    parent = run.data.tags.get("mlflow.parentRunId")
    later = [r for r in runs.children(parent) if r.info.start_time > start]
    until = next((r.info.start_time for r in later if r.data.tags.get("stage") == stage), math.inf)
    seen = {}
    for r in (r for r in later if r.info.start_time < until):
        for out, md5 in _inputs(r, declared).items():
            if out in outs:
                seen.setdefault(out, (md5, f"{r.data.tags.get('stage')} run {r.info.run_id[:8]}"))
    for version in runs.versions(parent):
        if start < version.creation_timestamp < until:
            for out in outs:
                if f"dvc.md5.{out}" in version.tags:
                    seen.setdefault(out, (version.tags[f"dvc.md5.{out}"], f"version {version.version}"))
    return seen


def agreement(seen: dict[str, tuple[str, str]], recorded: dict[str, str]) -> tuple[list[str], list[str]]:
    """(what confirms the recorded md5s, what contradicts them)."""
    agree = [f"{out} by {by}" for out, (md5, by) in seen.items() if recorded.get(out) == md5]
    differ = [f"{out} {md5} by {by}" for out, (md5, by) in seen.items() if out in recorded and recorded[out] != md5]
    return agree, differ


def _stage_entry(runs: Runs, run: Run | None, origin: str, outs: list[str], recorded: dict, declared: dict,
                 pipeline_params: dict) -> dict:
    entry = {"origin": origin, "outputs": {o: recorded[o] for o in outs if o in recorded}}
    if run is None:
        return entry
    params = {k.removeprefix("params."): v for k, v in run.data.params.items() if k.startswith("params.")}
    inputs, parent = _inputs(run, declared), run.data.tags.get("mlflow.parentRunId")
    agree, differ = agreement(seen_outputs(runs, run, outs, declared), recorded)
    return entry | {
        "run_id": run.info.run_id, "status": run.info.status, "started": _time(run.info.start_time),
        "pipeline_run_id": parent, "pipeline_run_status": runs.run(parent).info.status if parent else None,
        "git_commit": run.data.tags.get("git.commit"), "params": params,
        "params_not_as_pipeline_run": {k: [v, pipeline_params[k]] for k, v in params.items()
                                       if k in pipeline_params and pipeline_params[k] != v},
        "inputs": inputs,
        "inputs_not_as_version": {o: [m, recorded[o]] for o, m in inputs.items() if o in recorded and recorded[o] != m},
        "outputs_confirmed_by": agree, "outputs_contradicted_by": differ,
        "metrics": dict(run.data.metrics)}


def stage_entries(runs: Runs, stages: list[str], parent_id: str | None, register_run: Run, recorded: dict,
                  declared: dict, pipeline_params: dict) -> list[dict]:
    """One entry per pipeline stage: its run in the version's pipeline run, or the earlier run whose outputs the
    version holds, or none found (then only the md5s dvc.lock had at registration)."""
    before = register_run.info.start_time
    own = [r for r in runs.children(parent_id) if r.info.start_time <= before]
    entries = []
    for stage in stages:
        outs = [p for p, spec in declared.items() if spec["stage"] == stage]
        if register_run.data.tags.get("stage") == stage:   # its outputs came after the version's tags: none recorded
            run, origin, outs = register_run, "registered the version", []
        else:
            here = [r for r in own if r.data.tags.get("stage") == stage and r.info.status == "FINISHED"]
            run, origin = (here[-1], "this pipeline run") if here else _maker(runs, stage, before, parent_id, outs,
                                                                              recorded, declared)
        entries.append({"stage": stage} | _stage_entry(runs, run, origin, outs, recorded, declared, pipeline_params))
    return entries


def _maker(runs: Runs, stage: str, before: int, parent_id: str | None, outs: list[str], recorded: dict,
           declared: dict) -> tuple[Run | None, str]:
    """The latest earlier FINISHED run of a stage that was up to date in this pipeline run, which consumed the data the
    version records and whose outputs are known to be the version's."""
    for run in runs.finished(stage, before):
        if run.data.tags.get("mlflow.parentRunId") == parent_id:
            continue
        seen = seen_outputs(runs, run, outs, declared)
        agree, differ = agreement(seen, recorded)
        consumed = all(recorded.get(out, md5) == md5 for out, md5 in _inputs(run, declared).items())
        # not seen: nothing after it in its own pipeline run read its outputs (the reward model, read only by evaluate,
        # when that run failed before evaluate): the latest such run that read what the version records made them
        if (agree or not seen) and not differ and consumed:
            return run, "earlier pipeline run (up to date in this one)"
    return None, "up to date in this pipeline run, made by an earlier run not found in this store"


def _time(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds") if ms else None


def _smoke_test(client: MlflowClient, run_id: str) -> dict:
    """The smoke_test stage's result.json artifact, when it logged one."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            found = json.loads(Path(client.download_artifacts(run_id, "result.json", tmp)).read_text())
        except (MlflowException, OSError, ValueError):
            return {}
    return {k: found[k] for k in SMOKE_FIELDS if k in found}


def lineage(client: MlflowClient, version: ModelVersion, stages: list[str], eval_figures: tuple[str, ...],
            declared: dict) -> dict:
    tags = version.tags
    recorded = {k.removeprefix("dvc.md5."): v for k, v in tags.items() if k.startswith("dvc.md5.")}
    register_run = client.get_run(version.run_id)
    parent_id = tags.get("pipeline.run_id") or register_run.data.tags.get("mlflow.parentRunId")
    parent = client.get_run(parent_id) if parent_id else None
    runs = Runs(client, register_run.info.experiment_id, version.name)
    pipeline_params = dict(parent.data.params) if parent else {}
    entries = stage_entries(runs, stages, parent_id, register_run, recorded, declared, pipeline_params)
    by_stage = {e["stage"]: e for e in entries}
    clean = by_stage.get("clean", {}).get("metrics", {})
    evaluate = by_stage.get("evaluate", {}).get("metrics", {})
    smoke = by_stage.get("smoke_test", {})
    return {
        "model": version.name, "version": int(version.version), "aliases": sorted(version.aliases),
        "uri": f"models:/{version.name}/{version.version}", "registered": _time(version.creation_timestamp),
        "register_run_id": version.run_id, "source": version.source,
        "registering_stage": register_run.data.tags.get("stage"), "tags": dict(tags), "data": recorded,
        "pipeline_run": parent and {
            "run_id": parent.info.run_id, "name": parent.info.run_name, "status": parent.info.status,
            "started": _time(parent.info.start_time), "ended": _time(parent.info.end_time),
            **{k: parent.data.tags.get(t) for k, t in (("launcher", "pipeline.launcher"), ("key", "pipeline.key"),
                                                       ("git_commit", "git.commit"), ("params_hash", "params.hash"),
                                                       ("alias", "alias"), ("dvc_experiment", "dvc.experiment"))},
            "params": pipeline_params},
        "stages": entries,
        "clean": {k: v for k, v in clean.items() if k in CLEAN_COUNTS or k.startswith("dropped_by_reason.")},
        "eval": {k: evaluate[k] for k in eval_figures if k in evaluate},
        "smoke_test": ({k: smoke["metrics"][k] for k in ("startup_s", "smoke_latency_s") if k in smoke["metrics"]}
                       | _smoke_test(client, smoke["run_id"])) if smoke.get("run_id") else {},
    }
