"""The whole pipeline as a user runs it: the Prefect flow in a fresh project folder, then `dvc repro` finds nothing
to do. A shrunken params.yaml keeps it to a few minutes; every stage is the real one (model, data, vLLM, MLflow)."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SMALL = {
    "ingest": {"max_records": 400},
    "datasets": {"max_tokens": 160, "sft_train_size": 16, "sft_test_size": 8, "pref_train_size": 8,
                 "pref_test_size": 8, "max_new_tokens": 24},
    "sft": {"max_steps": 2, "per_device_batch_size": 2, "max_length": 160, "eval_steps": 2, "logging_steps": 1},
    "dpo": {"max_steps": 2, "per_device_batch_size": 2, "max_length": 160, "logging_steps": 1},
    "deploy": {"python": str(ROOT / ".venv-serve" / "bin" / "python")},
    "evaluate": {"eval_size": 4, "max_tokens": 24, "concurrency": 2, "load_prompts": 4, "load_input_len": 32,
                 "load_output_len": 16},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    proj = tmp_path_factory.mktemp("project")
    for name in ("tasks", "flows"):
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", proj)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in SMALL.items():
        params[section].update(values)
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=proj, env=env, check=True)
    run = subprocess.run([sys.executable, "-m", "flows.pipeline"], cwd=proj, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    return proj, env


def test_every_stage_ran_and_left_its_outputs(project):
    proj, _ = project
    metrics = json.loads((proj / "data/eval/metrics.json").read_text())
    assert set(metrics["ppl"]) == {"base", "sft", "dpo", "quantized"}
    assert all(v > 1 for v in metrics["ppl"].values())
    assert metrics["serving"]["requests_failed"] == 0 and metrics["serving"]["output_tok_s"] > 0
    clean = json.loads((proj / "data/clean/report.json").read_text())
    assert clean["rows_in"] == clean["rows_kept"] + sum(clean["dropped_by_reason"].values())
    assert json.loads((proj / "data/deploy/deployment.json").read_text())["smoke_answer"].strip()
    assert "Run report" in (proj / "data/registry/report.md").read_text()


def test_mlflow_has_a_run_tree_and_a_registered_alias(project):
    proj, _ = project
    client = MlflowClient(f"sqlite:///{proj}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("finetune-pipeline")
    parents = client.search_runs([exp.experiment_id], "tags.`pipeline.launcher` = 'prefect'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")
    by_stage = {r.data.tags["stage"]: r for r in children}
    assert list(yaml.safe_load((proj / "dvc.yaml").read_text())["stages"]) == sorted(
        by_stage, key=lambda s: by_stage[s].info.start_time)
    sft_run = by_stage["sft"].info.run_id
    assert len(client.get_metric_history(sft_run, "loss")) >= 2            # per-step training metrics
    assert "params.sft.max_steps" in by_stage["sft"].data.params
    assert by_stage["sft"].data.tags["git.commit"]
    assert {a.path for a in client.list_artifacts(by_stage["clean"].info.run_id)} >= {"report.md", "plots"}
    assert any(a.path == "loss_curve.png" for a in client.list_artifacts(sft_run, "sft_adapter"))
    registration = json.loads((proj / "data/registry/registration.json").read_text())
    version = client.get_model_version_by_alias("smollm2-sharegpt", registration["alias"])
    assert version.run_id == by_stage["register"].info.run_id


def test_dvc_repro_after_the_flow_has_nothing_to_do(project):
    proj, env = project
    out = subprocess.run(["dvc", "repro"], cwd=proj, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Running stage" not in out.stdout
    assert "up to date" in out.stdout
