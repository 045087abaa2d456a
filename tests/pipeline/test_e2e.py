"""The whole pipeline as a user runs it, in a fresh project folder: a first flow run fails midway (no serving env),
the fixed re-run resumes after the stages that finished, then `dvc repro` finds nothing to do; last, a worse
retraining is measured against the champion the first run made, and refused. A shrunken
params.yaml keeps it to a few minutes; every stage is the real one (model, data, vLLM, MLflow)."""
import json
import sqlite3
import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tasks.common.redact import redact
from tasks.config import flat_params, load_config
from tasks.evaluate.benchmark import LOCAL_TASK
from tasks.evaluate.figures import JUDGED
from tasks.stages import STAGES

pytestmark = pytest.mark.slow


def test_every_stage_ran_and_left_its_outputs(project):
    proj, _, _ = project
    metrics = json.loads((proj / "data/eval/metrics.json").read_text())
    ppl = metrics["ppl"]
    assert ppl.pop("previous_held_out") is None      # no champion yet: no earlier held-out rows to forget
    assert set(ppl) == {"base", "sft", "dpo", "served"} and all(v > 1 for v in ppl.values())
    assert metrics["serving"]["requests_failed"] == 0 and metrics["serving"]["output_tok_s"] > 0
    rag = metrics["rag"]      # 4 held-out questions; passages of all 8 held-out replies
    assert rag["questions"] == 4 and rag["passages"] >= 8
    assert all(0 <= rag[k] <= 1 for k in ("recall_at_k", "mrr", "ndcg_at_k", "semantic_similarity"))
    assert rag["semantic_similarity_nan_rate"] == 0.0
    assert rag["judged_questions"] == 1 and all(0 <= rag[f"{k}_nan_rate"] <= 1 for k in JUDGED)
    assert set(metrics["benchmark"]) == {"base", "sft", "dpo", "served"}
    assert all(0 <= scores[LOCAL_TASK]["acc"] <= 1 for scores in metrics["benchmark"].values())
    judge = metrics["judge"]     # no champion yet: the candidate against the base, judged by the base
    assert judge["opponent"] == "base" and judge["n"] == 2 and judge["calibration"]["pairs"] == 5
    assert judge["calibration"]["parse_failure_rate"] == 0.0 and judge["failed"] == 0
    clean = json.loads((proj / "data/clean/report.json").read_text())
    assert clean["rows_in"] == clean["rows_kept"] + sum(clean["dropped_by_reason"].values())
    assert json.loads((proj / "data/smoke_test/result.json").read_text())["smoke_answer"].strip()
    report = (proj / "data/registry/report.md").read_text()
    assert "Run report" in report and "## RAG on the served model" in report and "NaN rate" in report
    assert "## LLM judge" in report and "Calibration on 5 planted pairs" in report and "## Benchmark" in report
    assert "faithfulness (ragas, LLM-judged)" in report


def test_no_planted_canary_survives_anywhere_and_the_served_model_says_none(project):
    from tasks.data.canaries import make_canaries, scan

    proj, _, _ = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    canaries = make_canaries(params["evaluate"]["canaries"], params["runtime"]["seed"])
    assert json.loads((proj / "data/ingested/report.json").read_text())["canaries_planted"] == len(canaries) > 0
    planted = scan([proj / "data/ingested/conversations.jsonl"], canaries)       # they are in the raw corpus ...
    assert set(*planted.values()) == {c.kind for c in canaries}
    # ... and nowhere else: outputs, MLflow's store and artifacts, Prefect's database, vLLM's logs, DVC's state
    assert scan([proj], canaries, skip=[proj / "data/ingested", proj / ".dvc" / "cache"]) == {}
    assert json.loads((proj / "data/eval/metrics.json").read_text())["canaries"] == {"probed": len(canaries),
                                                                                     "exposed": 0}
    gates = {g["gate"]: g for g in json.loads((proj / "data/registry/registration.json").read_text())["gates"]}
    assert gates["canary secrets in outputs, stores and logs"]["passed"]
    assert gates["canaries the served model completed"]["passed"]


def test_evaluate_scored_the_candidate_on_the_server_smoke_test_started(project):
    proj, _, log = project
    assert json.loads((proj / "data/smoke_test/result.json").read_text())["startup_s"] > 0
    times = json.loads((proj / "data/eval/metrics.json").read_text())["time_s"]
    assert times["candidate: server start"] == 0.0 and times["judge: server start"] > 0   # one start per model
    assert log.count("reusing the vLLM server") == 1
    assert not list((proj / ".serve-logs").glob("*.pid"))                                 # all stopped at the end


def test_failed_run_resumes_after_the_stages_that_finished(project):
    proj, _, log = project
    client = MlflowClient(f"sqlite:///{proj}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("finetune-pipeline")
    first, second = client.search_runs([exp.experiment_id], "tags.`pipeline.launcher` = 'prefect'",
                                       order_by=["attributes.start_time ASC"])
    assert (first.info.status, second.info.status) == ("FAILED", "FINISHED")

    def stages(parent):
        runs = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  order_by=["attributes.start_time ASC"])
        return [(r.data.tags["stage"], r.info.status) for r in runs]

    names = list(yaml.safe_load((proj / "dvc.yaml").read_text())["stages"])
    smoke = names.index("smoke_test")
    assert stages(first)[:smoke] == [(name, "FINISHED") for name in names[:smoke]]
    assert set(stages(first)[smoke:]) == {("smoke_test", "FAILED")}    # tried again once (stage retries), then failed
    assert [s for s, _ in stages(second)] == names[smoke:]
    assert "quantize: up to date (dvc.lock), skipped" in log


def test_mlflow_has_a_run_tree_and_a_registered_alias(project):
    proj, _, _ = project
    client = MlflowClient(f"sqlite:///{proj}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("finetune-pipeline")
    finished = client.search_runs([exp.experiment_id], "tags.stage != '' and attributes.status = 'FINISHED'")
    by_stage = {r.data.tags["stage"]: r for r in finished}
    assert set(by_stage) == set(yaml.safe_load((proj / "dvc.yaml").read_text())["stages"])
    sft_run = by_stage["sft"].info.run_id
    assert len(client.get_metric_history(sft_run, "loss")) >= 2            # per-step training metrics
    cfg = load_config(proj / "params.yaml")
    for stage in STAGES:   # each stage records exactly the settings it declares reading, with their values
        assert by_stage[stage.name].data.params == {f"params.{k}": str(v) for k, v in
                                                    redact(flat_params(cfg, stage.params)).items()}, stage.name
    assert "params.sft.max_steps" in by_stage["sft"].data.params and "params.runtime.seed" in by_stage["sft"].data.params
    assert by_stage["sft"].data.tags["git.commit"]
    from tasks.common.hardware import hardware_tags
    assert {k: by_stage["sft"].data.tags[k] for k in hardware_tags()} == hardware_tags()   # the CPU behind figures
    lock = yaml.safe_load((proj / "dvc.lock").read_text())["stages"]
    datasets_md5 = next(o["md5"] for o in lock["datasets"]["outs"] if o["path"] == "data/datasets")
    assert by_stage["sft"].data.tags["dvc.input.data/datasets/sft_train.jsonl"] == datasets_md5   # data lineage
    assert {a.path for a in client.list_artifacts(by_stage["clean"].info.run_id)} >= {"report.md", "plots"}
    # HF's callback logs metrics only; the trainer's resolved arguments (~110 of them) are an artifact, not params
    assert {"sft_adapter/loss_curve.png", "sft_adapter/trainer_args.json"} <= {
        a.path for a in client.list_artifacts(sft_run, "sft_adapter")}
    inputs = {d.dataset.name: d.dataset for d in by_stage["sft"].inputs.dataset_inputs}   # mlflow.log_input
    assert inputs["data/datasets/sft_train.jsonl"].digest == datasets_md5
    assert inputs["data/models/base"].digest == next(o["md5"] for o in lock["base_model"]["outs"]
                                                        if o["path"] == "data/models/base")
    registration = json.loads((proj / "data/registry/registration.json").read_text())
    version = client.get_model_version_by_alias("smollm2-sharegpt", registration["alias"])
    assert version.run_id == by_stage["register"].info.run_id
    parent = client.get_run(by_stage["register"].data.tags["mlflow.parentRunId"])
    # the parent carries each stage's headline: the MLflow UI compares pipeline runs on it
    assert {"clean.rows_kept", "evaluate.ppl.served", "evaluate.ppl.base", "evaluate.judge.win_rate",
            "evaluate.serving.ttft_median_ms", "register.promoted"} <= set(parent.data.metrics)
    assert parent.data.metrics["clean.rows_kept"] == json.loads((proj / "data/clean/report.json").read_text())[
        "rows_kept"]
    assert parent.data.tags["alias"] == registration["alias"] and parent.data.params["sft.learning_rate"]
    # the registry version says what made it: commit, params, data, and how good it was
    assert version.tags["pipeline.run_id"] == parent.info.run_id
    assert version.tags["dvc.md5.data/datasets"] == datasets_md5 and version.tags["params.hash"]
    assert float(version.tags["eval.ppl_served"]) == json.loads((proj / "data/eval/metrics.json").read_text())[
        "ppl"]["served"]
    # DVC metrics: a few numbers per stage, no strings
    headline = json.loads((proj / "data/metrics/evaluate.json").read_text())
    assert 0 < len(headline) <= 20 and all(isinstance(v, (int, float)) for v in headline.values())


def test_stage_reports_are_prefect_artifacts(project):
    """The cleaning report and the run report show in the Prefect UI's Artifacts tab. Read from Prefect's own store:
    in 3.8.8 the artifact CLI and the client's artifact filter fail with a 422 against the ephemeral server."""
    proj, _, _ = project
    with sqlite3.connect(proj / ".prefect" / "prefect.db") as db:
        artifacts = {key: json.loads(data) for key, data in db.execute("select key, data from artifact")}
    assert artifacts["clean-report"].startswith("# Cleaning report")
    assert "rows in: **" in artifacts["clean-report"]
    assert artifacts["register-report"].startswith("# Run report")


def test_dvc_repro_after_the_flow_has_nothing_to_do(project):
    proj, env, _ = project
    out = subprocess.run(["dvc", "repro"], cwd=proj, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "Running stage" not in out.stdout
    assert "up to date" in out.stdout


def test_vllm_killed_under_evaluate_fails_the_stage_naming_it_and_the_retry_completes(worse_retrain):
    proj, before, _, said = worse_retrain
    assert "KILLED vLLM process group" in said
    assert "vLLM exited with code -9 while serving" in said, said[-5000:]   # the cause, with its log tail
    client = MlflowClient(f"sqlite:///{proj}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("finetune-pipeline").experiment_id],
                              "tags.stage = 'evaluate'", order_by=["attributes.start_time DESC"])
    assert [r.info.status for r in runs[:2]] == ["FINISHED", "FAILED"]   # the retry, and the attempt that lost vLLM
    assert not any(r.info.status == "RUNNING" for r in runs)
    assert not list((proj / ".serve-logs").glob("*.pid"))                 # every server it started is gone


def test_a_worse_retrain_stays_challenger_and_the_champion_keeps_its_alias(worse_retrain):
    proj, before, after, _ = worse_retrain
    assert before["alias"] == "champion"
    assert after["alias"] == "challenger" and "served ppl vs champion" in after["why"], after["why"]
    absolute = [g for g in after["gates"] if "candidate" not in g]
    assert all(g["passed"] for g in absolute), absolute         # only the comparison with the champion refused it
    metrics = json.loads((proj / "data/eval/metrics.json").read_text())
    assert metrics["champion"]["version"] == before["version"]          # served and measured in the same run
    assert metrics["ppl"]["served"] > metrics["champion"]["ppl"]["served"]
    client = MlflowClient(f"sqlite:///{proj}/mlruns/mlflow.db")
    assert int(client.get_model_version_by_alias("smollm2-sharegpt", "champion").version) == before["version"]
    challenger = client.get_model_version_by_alias("smollm2-sharegpt", "challenger")
    assert int(challenger.version) == after["version"] > before["version"]
    assert challenger.tags["compared_with_champion"] == str(before["version"])
    champion = client.get_model_version("smollm2-sharegpt", str(before["version"]))
    assert (champion.tags["align_method"], challenger.tags["align_method"]) == ("dpo", "grpo")   # what made each
    assert metrics["reward_judge"]["opponent"] == f"champion v{before['version']}"
    report = (proj / "data/registry/report.md").read_text()
    assert "## Against the champion" in report and "| served ppl |" in report and "| judge win rate |" in report
    assert "| | LLM judge | reward model |" in report and "Reward model (tasks/train/reward.py" in report
    assert metrics["judge"]["opponent"] == f"champion v{before['version']}"
    assert "benchmark acc vs champion" in {g["gate"] for g in after["gates"]}
    answers = [json.loads(line) for line in (proj / "data/eval/answers.jsonl").read_text().splitlines()]
    assert all(a["champion_answer"].strip() for a in answers)
    evaluate_run = client.search_runs([client.get_experiment_by_name("finetune-pipeline").experiment_id],
                                      "tags.stage = 'evaluate'", order_by=["attributes.start_time DESC"])[0]
    assert "eval/answers.json" in {a.path for a in client.list_artifacts(evaluate_run.info.run_id, "eval")}
