"""`python -m tasks lineage` on a real MLflow store and a real DVC project, built in seconds: the stages' work is
replaced by small files, everything else is the pipeline's own code (tracking.start_pipeline, run_stage with the real
stage sections and headlines, tracking.register_model, DVC's status and commit as the flow uses them). Four pipeline
runs, as a user makes them:
  A  every stage up to quantize, then smoke_test fails;   B  the re-run: smoke_test, evaluate, register -> v1 @champion;
  C  sft.learning_rate 0.0: sft..register -> v2 @challenger;
  D  dvc.lock and data put back to B's (git checkout + dvc checkout), a gate changed: register only -> v3 @champion.
v3's sft..quantize were made in A, not by C's newer runs, whose outputs differ: the walk must tell them apart."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

CACHED = {"base_model": ["data/models/base"], "ingest": ["data/ingested"], "clean": ["data/clean"],
          "datasets": ["data/datasets"], "sft": ["data/models/sft_adapter"], "pairs": ["data/pairs"],
          "reward": ["data/models/reward"], "dpo": ["data/models/dpo_adapter"], "quantize": ["data/models/quantized"], "smoke_test": [],
          "evaluate": ["data/eval/answers.jsonl"], "register": []}
UNCACHED = {"smoke_test": ["data/smoke_test/result.json"], "evaluate": ["data/eval/metrics.json"],
            "register": ["data/registry"]}
DEPS = {"clean": ["data/ingested/conversations.jsonl"], "datasets": ["data/clean/conversations.jsonl",
                                                                     "data/models/base"],
        "sft": ["data/datasets/sft_train.jsonl", "data/models/base"], "pairs": ["data/models/sft_adapter"],
        "dpo": ["data/pairs/pref_train.jsonl", "data/models/sft_adapter"], "quantize": ["data/models/dpo_adapter"],
        "smoke_test": ["data/models/quantized"],
        "reward": ["data/pairs/pref_train.jsonl", "data/models/sft_adapter"],   # read by evaluate only: A never did
        "evaluate": ["data/models/quantized", "data/datasets/sft_train.jsonl", "data/models/reward"],
        "register": ["data/eval/metrics.json", "data/smoke_test/result.json", "data/models/quantized"]}
PARAMS = {"sft": ["sft.learning_rate"], "register": ["gates.min_rouge_l"]}
FILES = {"data/ingested": "conversations.jsonl", "data/clean": "conversations.jsonl",
         "data/datasets": "sft_train.jsonl", "data/pairs": "pref_train.jsonl", "data/registry": "registration.json"}
CLEAN = {"rows_in": 120, "rows_kept": 100, "rows_dropped": 20, "rows_pii_scrubbed": 7,
         "dropped_by_reason": {"exact_duplicate": 12, "near_duplicate": 5, "too_short": 3}}
AFTER_SFT = ("sft", "pairs", "reward", "dpo", "quantize", "smoke_test", "evaluate")


def _dvc_yaml() -> dict:
    stages = {}
    for name, outs in CACHED.items():
        uncached = UNCACHED.get(name, []) + [f"data/stages/{name}.json"]
        stages[name] = {"cmd": "true", **({"deps": DEPS[name]} if name in DEPS else {}),
                        **({"params": PARAMS[name]} if name in PARAMS else {}),
                        "outs": outs + [{p: {"cache": False}} for p in uncached],
                        "metrics": [{f"data/metrics/{name}.json": {"cache": False}}]}
    return {"stages": stages}


def _write_outputs(stage: str, cfg) -> None:
    """Each output's content says what made it: from sft on, the learning rate, so a retrain changes their md5."""
    made = f"{stage} lr={cfg.sft.learning_rate}" if stage in AFTER_SFT else stage
    made += f" rouge>={cfg.gates.min_rouge_l}" if stage == "register" else ""
    for out in CACHED[stage] + UNCACHED.get(stage, []):
        path = Path(out)
        if path.suffix not in (".json", ".jsonl"):
            path = path / FILES.get(out, "weights.bin")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{made}\n")


def _evaluation(cfg) -> dict:
    """A whole evaluation (tasks/evaluate/figures.py:Evaluation) whose perplexities say how much the model trained."""
    from tests.release.conftest import GOOD

    lr = cfg.sft.learning_rate
    return GOOD | {"ppl": {"base": 4.45, "sft": round(4.45 - 100 * lr, 4), "dpo": round(4.46 - 100 * lr, 4),
                           "served": round(4.47 - 100 * lr, 4)},
                   "pref_accuracy": 0.75, "rouge_l": 0.1469, "benchmark_acc": 0.375,
                   "serving": GOOD["serving"] | {"ttft_median_ms": 95.6, "tpot_median_ms": 28.2},
                   "canaries": {"probed": 8, "exposed": 0}}


def _fake(stage: str, fail: bool, cfg):
    """The stage's work as small files; what it returns is what the real stage would log (the stage's headline).
    Its outputs say which settings made them, so it reads the whole config `cfg`, not the stage's view."""
    def run(_view) -> dict:
        from tasks.stages import BY_NAME

        if fail:
            raise RuntimeError(f"{stage}: vllm.python does not exist")
        _write_outputs(stage, cfg)
        lr = cfg.sft.learning_rate
        if stage == "clean":
            return dict(CLEAN)
        if stage == "smoke_test":
            smoke = {"startup_s": 48.1 if lr else 50.2, "smoke_latency_s": 0.281, "smoke_answer": "Paris.",
                     "dtype": "auto", "model_dir": "data/models/quantized"}
            Path("data/smoke_test/result.json").write_text(json.dumps(smoke))
            return {k: smoke[k] for k in ("startup_s", "smoke_latency_s")}
        if stage == "evaluate":
            from tasks.evaluate.figures import Evaluation

            metrics = Evaluation.model_validate(_evaluation(cfg)).model_dump()   # as evaluate writes them
            Path("data/eval/metrics.json").write_text(json.dumps(metrics))
            return metrics
        if stage == "register":
            from tasks import tracking
            from tasks.evaluate.figures import Evaluation
            from tasks.release.register import eval_summary

            metrics = json.loads(Path("data/eval/metrics.json").read_text())
            made = tracking.register_model(cfg.tracking.registered_model, Path("data/models/quantized"),
                                           "champion" if lr else "challenger", "test",
                                           {"gates": "passed", **eval_summary(Evaluation.model_validate(metrics))})
            return made | {"promoted": int(made["alias"] == "champion"), "gates_failed": 0, "gates_skipped": 0}
        value = 1 + 100 * lr if stage in AFTER_SFT else 1
        return {key: value for key in BY_NAME[stage].headline if key != "duration_s"}
    return run


def _pipeline(cfg, fail_at: str | None = None) -> str:
    """What flows/pipeline.py does: skip what DVC says is up to date, run the rest in order, commit each to dvc.lock."""
    from dataclasses import replace

    from dvc.repo import Repo

    from flows.pipeline import up_to_date
    from tasks import tracking
    from tasks.stages import STAGES, run_stage

    repo, parent = Repo("."), tracking.start_pipeline(cfg, launcher="prefect")
    for stage in STAGES:
        if up_to_date(repo, stage.name):
            continue
        try:
            run_stage(cfg, replace(stage, run=_fake(stage.name, stage.name == fail_at, cfg)), parent)
        except RuntimeError:
            tracking.end_pipeline(parent, "FAILED")
            return parent
        repo.commit(stage.name, force=True)
    tracking.end_pipeline(parent)
    return parent


def _git_tracked() -> dict[Path, bytes]:
    """What a git commit holds: dvc.lock, params.yaml and the outputs DVC does not cache."""
    roots = [Path(p) for p in ("dvc.lock", "params.yaml", "data/stages", "data/metrics",
                               *(out for outs in UNCACHED.values() for out in outs))]
    return {f: f.read_bytes() for r in roots for f in ([r] if r.is_file() else r.rglob("*")) if f.is_file()}


def build_store(root: Path) -> dict[str, str]:
    """The four pipeline runs in `root`; returns their parent run ids by letter."""
    from dvc.repo import Repo

    from tasks.config import load_config

    os.chdir(root)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], check=True)
    Path("dvc.yaml").write_text(yaml.safe_dump(_dvc_yaml(), sort_keys=False))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tracking"] |= {"tracking_uri": "sqlite:///mlruns/mlflow.db", "artifact_root": "mlruns/artifacts"}

    def run(fail_at: str | None = None) -> str:
        Path("params.yaml").write_text(yaml.safe_dump(params))
        return _pipeline(load_config("params.yaml"), fail_at)

    parents = {"A": run(fail_at="smoke_test"), "B": run()}
    committed = _git_tracked()
    params["sft"]["learning_rate"] = 0.0
    parents["C"] = run()
    for path, content in committed.items():      # `git checkout <B>` ...
        path.write_bytes(content)
    params = yaml.safe_load(Path("params.yaml").read_text())
    Repo(".").checkout(force=True)                # ... then `dvc checkout`
    params["gates"]["min_rouge_l"] = 0.01
    parents["D"] = run()
    return parents


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Built in its own process: tracking.configure sets MLflow's process globals, which must not leak into tests."""
    root = tmp_path_factory.mktemp("lineage")
    code = (f"import json, pathlib; from tests.ops.test_lineage_unit import build_store; "
            f"print(json.dumps(build_store(pathlib.Path({str(root)!r}))))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-5000:]
    return root, json.loads(done.stdout.strip().splitlines()[-1])


def lineage(root: Path, monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    from tasks.ops.lineage import main

    monkeypatch.chdir(root)
    code = main(list(argv))
    return code, capsys.readouterr().out


def _chain(root, monkeypatch, capsys, *argv, exit_code: int = 0) -> dict:
    code, out = lineage(root, monkeypatch, capsys, *argv, "--json")
    assert code == exit_code
    return json.loads(out)


def test_champion_chain_walks_back_through_each_stage_to_the_runs_that_made_its_data(store, monkeypatch, capsys):
    root, parents = store
    chain = _chain(root, monkeypatch, capsys)                 # default: models:/<registered_model>@champion
    assert (chain["version"], chain["aliases"]) == (3, ["champion"])
    assert chain["pipeline_run"]["run_id"] == parents["D"] and chain["pipeline_run"]["status"] == "FINISHED"
    made_in = {e["stage"]: e.get("pipeline_run_id") for e in chain["stages"]}
    # D ran only register; smoke_test and evaluate came from B; everything before from A (which then failed; its
    # reward model was read only by B's evaluate),
    # not from C, whose newer sft..quantize runs made other data
    assert made_in == {**{s: parents["A"] for s in list(CACHED)[:9]}, "smoke_test": parents["B"],
                       "evaluate": parents["B"], "register": parents["D"]}
    by_stage = {e["stage"]: e for e in chain["stages"]}
    assert by_stage["quantize"]["pipeline_run_status"] == "FAILED"
    assert by_stage["register"]["origin"] == "registered the version"
    assert all(e["status"] == "FINISHED" and not e["inputs_not_as_version"] and e["outputs_confirmed_by"]
               for e in chain["stages"] if e["stage"] not in ("register", "reward"))
    # nothing after it in A read the reward model: A's latest reward run that read what v3 records, uncontradicted
    assert by_stage["reward"]["status"] == "FINISHED" and not by_stage["reward"]["outputs_contradicted_by"]
    lock = {k.removeprefix("dvc.md5."): v for k, v in chain["tags"].items() if k.startswith("dvc.md5.")}
    assert by_stage["sft"]["outputs"] == {p: lock[p] for p in ("data/models/sft_adapter", "data/stages/sft.json",
                                                               "data/metrics/sft.json")}
    assert by_stage["sft"]["inputs"] == {"data/datasets": lock["data/datasets"], "data/models/base":
                                         lock["data/models/base"]}
    assert by_stage["sft"]["params"]["sft.learning_rate"] == str(yaml.safe_load(
        (ROOT / "params.yaml").read_text())["sft"]["learning_rate"])
    assert chain["clean"] == {"rows_in": 120, "rows_kept": 100, "rows_dropped": 20, "rows_pii_scrubbed": 7,
                              "dropped_by_reason.exact_duplicate": 12, "dropped_by_reason.near_duplicate": 5,
                              "dropped_by_reason.too_short": 3}
    evaluation = json.loads((root / "data/eval/metrics.json").read_text())
    assert chain["eval"]["ppl.served"] == evaluation["ppl"]["served"] == float(chain["tags"]["eval.ppl_served"])
    assert chain["eval"]["serving.ttft_median_ms"] == 95.6 and "duration_s" not in chain["eval"]
    assert chain["smoke_test"] == {"startup_s": 48.1, "smoke_latency_s": 0.281, "smoke_answer": "Paris.",
                                   "dtype": "auto", "model_dir": "data/models/quantized"}


def test_text_names_the_version_its_pipeline_run_each_stage_and_the_figures(store, monkeypatch, capsys):
    root, parents = store
    code, out = lineage(root, monkeypatch, capsys, "models:/smollm2-sharegpt@champion")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("smollm2-sharegpt version 3 @champion")
    assert f"pipeline run  {parents['D'][:8]}" in out
    for stage in CACHED:
        assert any(line.startswith(stage) for line in lines), stage
    assert f"earlier run {parents['A'][:8]} (FAILED)" in next(line for line in lines if line.startswith("sft "))
    assert "120 in → 100 kept, 20 dropped: exact_duplicate 12, near_duplicate 5, too_short 3; 7 rows PII-scrubbed" \
        in out
    served = json.loads((root / "data/eval/metrics.json").read_text())["ppl"]["served"]
    assert f"ppl.served {served:g}" in out and "startup_s 48.1 s" in out and "'Paris.'" in out
    assert 20 <= len(lines) <= 60 and max(map(len, lines)) <= 120


def test_a_retrained_version_shows_its_own_runs_and_the_params_that_made_it(store, monkeypatch, capsys):
    root, parents = store
    chain = _chain(root, monkeypatch, capsys, "2")
    assert chain["aliases"] == ["challenger"] and chain["pipeline_run"]["run_id"] == parents["C"]
    made_in = {e["stage"]: e["pipeline_run_id"] for e in chain["stages"]}
    assert made_in == {**{s: parents["A"] for s in list(CACHED)[:4]}, **{s: parents["C"] for s in list(CACHED)[4:]}}
    sft = next(e for e in chain["stages"] if e["stage"] == "sft")
    assert sft["params"]["sft.learning_rate"] == "0.0" == chain["pipeline_run"]["params"]["sft.learning_rate"]


def test_check_passes_where_the_workspace_holds_the_versions_data_and_names_what_differs(store, monkeypatch, capsys):
    root, _ = store
    code, out = lineage(root, monkeypatch, capsys, "--check")
    assert code == 0 and "OK: this workspace holds the same data" in out
    code, out = lineage(root, monkeypatch, capsys, "1", "--check")   # B's data, as v3's: only register differs
    assert code == 0
    chain = _chain(root, monkeypatch, capsys, "2", "--check", exit_code=1)   # C's: the workspace went back to B
    assert chain["check"]["ok"] is False
    differ = {r["path"] for r in chain["check"]["outputs"] if "problem" in r}
    assert differ == {f"{p}" for s in AFTER_SFT for p in CACHED[s] + UNCACHED.get(s, [])} | {
        f"data/{kind}/{s}.json" for s in AFTER_SFT for kind in ("stages", "metrics")}
    assert chain["check"]["not_compared"] == ["data/metrics/register.json", "data/registry",
                                              "data/stages/register.json"]
    code, out = lineage(root, monkeypatch, capsys, "2", "--check")
    assert code == 1 and "DIFFERS: this workspace differs in 22 of 34 outputs" in out
    assert "data/models/sft_adapter      version" in out and "dvc.lock has" in out


def test_check_fails_when_the_cache_lacks_a_file_of_a_directory_output(store, tmp_path, monkeypatch, capsys):
    root, _ = store
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    lock = {k.removeprefix("dvc.md5."): v for k, v in _chain(root, monkeypatch, capsys)["tags"].items()
            if k.startswith("dvc.md5.")}
    cache = copy / ".dvc/cache/files/md5"
    listing = json.loads((cache / lock["data/clean"][:2] / lock["data/clean"][2:]).read_text())
    (cache / listing[0]["md5"][:2] / listing[0]["md5"][2:]).unlink()
    (copy / "data/metrics/smoke_test.json").write_text("{}")
    code, out = lineage(copy, monkeypatch, capsys, "--check")
    assert code == 1
    assert "data/clean" in out and "1 of 1 files not in the DVC cache (e.g. conversations.jsonl)" in out
    assert "data/metrics/smoke_test.json" in out and "the workspace file has md5" in out


def test_a_target_that_names_no_version_is_an_error_not_a_traceback(store, monkeypatch, capsys):
    root, _ = store
    from tasks.ops.lineage import main

    monkeypatch.chdir(root)
    assert main(["9"]) == 2 and "9" in capsys.readouterr().err
    assert main(["models:/smollm2-sharegpt@nobody"]) == 2
    assert main(["latest-ish"]) == 2 and "names no model version" in capsys.readouterr().err
    monkeypatch.chdir(root / "data")              # no store here: said so, and none created
    assert main(["--params", str(root / "params.yaml")]) == 2 and "no MLflow store" in capsys.readouterr().err
    assert not (root / "data/mlruns").exists()


def test_a_stage_whose_maker_is_gone_from_the_store_shows_the_data_dvc_lock_recorded(store, tmp_path, monkeypatch,
                                                                                      capsys):
    """Runs deleted from the store (here: A's, in a copy): the stages A made are named with the md5s the version
    recorded, and said to be made by a run the store no longer has; nothing is guessed from C's newer runs."""
    from mlflow.tracking import MlflowClient

    root, parents = store
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, symlinks=True)
    client = MlflowClient(f"sqlite:///{copy}/mlruns/mlflow.db")
    for run in client.search_runs([client.get_run(parents["A"]).info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parents['A']}'"):
        client.delete_run(run.info.run_id)
    chain = _chain(copy, monkeypatch, capsys)
    gone = [e for e in chain["stages"] if "run_id" not in e]
    assert [e["stage"] for e in gone] == list(CACHED)[:9]
    recorded = {k.removeprefix("dvc.md5."): v for k, v in chain["tags"].items() if k.startswith("dvc.md5.")}
    assert gone[4]["outputs"]["data/models/sft_adapter"] == recorded["data/models/sft_adapter"]
    assert chain["clean"] == {}
    code, out = lineage(copy, monkeypatch, capsys)
    sft = out.splitlines().index(next(line for line in out.splitlines() if line.startswith("sft ")))
    assert code == 0 and "made by an earlier run not in this store" in out.splitlines()[sft]
    assert f"data/models/sft_adapter {recorded['data/models/sft_adapter'][:8]}" in out.splitlines()[sft + 1]
    assert "clean           no clean run found" in out
