"""`python -m tasks lineage` on the project the real pipeline made (tests/pipeline/conftest.py), run as a user runs it:
the chain names the version, its pipeline run and every stage, with the cleaning counts and evaluation figures the
project's files hold; `--check` passes where the workspace holds the version's data and fails where dvc.lock records
other data. The flow's first run failed at smoke_test, so the stages before it were made by that run and found there."""
import json
import shutil
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

MODEL = "smollm2-sharegpt"


def lineage(cwd, env, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tasks", "lineage", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True)


def chain_of(cwd, env, *argv, exit_code: int = 0) -> dict:
    done = lineage(cwd, env, *argv, "--json")
    assert done.returncode == exit_code, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(done.stdout)


def pipeline_runs(proj) -> list:
    """The flow's parent runs, oldest first."""
    client = MlflowClient(f"sqlite:///{proj}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("finetune-pipeline")
    return client.search_runs([exp.experiment_id], "tags.`pipeline.launcher` = 'prefect'",
                              order_by=["attributes.start_time ASC"])


def _figure(metrics: dict, dotted: str):
    for key in dotted.split("."):
        metrics = metrics[key]
    return metrics


def test_the_registered_versions_chain_matches_the_projects_files_and_its_data(project):
    proj, env, _ = project
    registration = json.loads((proj / "data/registry/registration.json").read_text())
    version = registration["version"]
    chain = chain_of(proj, env, str(version), "--check")
    tags = MlflowClient(f"sqlite:///{proj}/mlruns/mlflow.db").get_model_version(MODEL, str(version)).tags
    assert chain["version"] == version and registration["alias"] in chain["aliases"]
    assert chain["pipeline_run"]["run_id"] == tags["pipeline.run_id"] == pipeline_runs(proj)[-1].info.run_id
    stages = list(yaml.safe_load((proj / "dvc.yaml").read_text())["stages"])
    assert [e["stage"] for e in chain["stages"]] == stages
    for entry in chain["stages"]:     # every stage found, made from the data the version records, nothing contradicts
        assert entry.get("status") == "FINISHED", entry
        assert not entry["inputs_not_as_version"] and not entry["outputs_contradicted_by"], entry
    lock = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]
    sft = next(e for e in chain["stages"] if e["stage"] == "sft")
    assert sft["inputs"]["data/datasets"] == next(o["md5"] for o in lock["datasets"]["outs"]
                                                  if o["path"] == "data/datasets")
    clean = json.loads((proj / "data/clean/report.json").read_text())
    assert {k: chain["clean"][k] for k in ("rows_in", "rows_kept", "rows_dropped")} == {
        k: clean[k] for k in ("rows_in", "rows_kept", "rows_dropped")}
    assert {k.removeprefix("dropped_by_reason."): v for k, v in chain["clean"].items()
            if k.startswith("dropped_by_reason.")} == clean["dropped_by_reason"]
    evaluation = json.loads((proj / "data/eval/metrics.json").read_text())
    assert {"ppl.served", "rouge_l", "serving.ttft_median_ms"} <= set(chain["eval"])
    for figure, value in chain["eval"].items():
        assert value == pytest.approx(_figure(evaluation, figure)), figure
    smoke = json.loads((proj / "data/smoke_test/result.json").read_text())
    assert chain["smoke_test"]["startup_s"] == smoke["startup_s"]
    assert chain["smoke_test"]["smoke_answer"] == smoke["smoke_answer"]
    assert chain["check"]["ok"] and chain["check"]["outputs"]

    text = lineage(proj, env, str(version), "--check")
    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith(f"{MODEL} version {version} @{registration['alias']}")
    assert f"pipeline run  {chain['pipeline_run']['run_id'][:8]}" in text.stdout
    assert all(any(line.startswith(f"{stage} ") for line in lines) for stage in stages)
    assert f"{clean['rows_in']} in → {clean['rows_kept']} kept, {clean['rows_dropped']} dropped" in text.stdout
    assert f"ppl.served {round(evaluation['ppl']['served'], 4):g}" in text.stdout
    assert "OK: this workspace holds the same data" in text.stdout


def test_check_fails_when_dvc_lock_records_other_data(project, tmp_path):
    """A copy of the workspace whose dvc.lock says data/clean has another md5 (the store and data are the project's)."""
    proj, env, _ = project
    version = json.loads((proj / "data/registry/registration.json").read_text())["version"]
    copy = tmp_path / "workspace"
    copy.mkdir()
    for name in ("tasks", "data", "mlruns", ".dvc"):
        (copy / name).symlink_to(proj / name)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(proj / name, copy / name)
    lock = yaml.safe_load((proj / "dvc.lock").read_text())
    out = next(o for o in lock["stages"]["clean"]["outs"] if o["path"] == "data/clean")
    out["md5"] = "0123456789abcdef0123456789abcdef.dir"
    (copy / "dvc.lock").write_text(yaml.safe_dump(lock, sort_keys=False))
    done = lineage(copy, env, str(version), "--check")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "DIFFERS: this workspace differs in 1 of" in done.stdout
    assert "data/clean" in done.stdout and "dvc.lock has 01234567" in done.stdout


def test_after_a_retrain_the_champions_chain_still_leads_to_its_own_runs_and_check_names_what_changed(
        project, worse_retrain):
    """The worse retrain (third flow run) reran sft..register: the champion it did not replace was made by the first
    two runs, and this workspace now holds the retrain's adapters, not the champion's."""
    _, env, _ = project
    proj, before, after, _ = worse_retrain
    first, second, third = (r.info.run_id for r in pipeline_runs(proj))
    champion = chain_of(proj, env, "--check", exit_code=1)           # default: models:/<model>@champion
    assert champion["version"] == before["version"] and "champion" in champion["aliases"]
    made_in = {e["stage"]: e["pipeline_run_id"] for e in champion["stages"]}
    stages = list(made_in)
    smoke = stages.index("smoke_test")
    assert made_in == {**{s: first for s in stages[:smoke]}, **{s: second for s in stages[smoke:]}}
    differ = {r["path"] for r in champion["check"]["outputs"] if "problem" in r}
    assert {"data/models/sft_adapter", "data/models/dpo_adapter", "data/models/quantized"} <= differ
    assert not differ & {"data/models/base", "data/ingested", "data/clean", "data/datasets"}

    challenger = chain_of(proj, env, str(after["version"]), "--check")
    made_in = {e["stage"]: e["pipeline_run_id"] for e in challenger["stages"]}
    sft = stages.index("sft")
    assert made_in == {**{s: first for s in stages[:sft]}, **{s: third for s in stages[sft:]}}
    assert next(e for e in challenger["stages"] if e["stage"] == "sft")["params"]["sft.learning_rate"] == "0.0"
