"""The DVC remote round trip as a user makes it: a git project with the committed .dvc/config runs the cheap stages
(base_model ingest clean datasets) through `dvc repro`, pushes, a fresh `git clone` pulls, and nothing is stale.
The default push carries no raw email found in data/ingested; `--include-raw` carries them all (so the scan can
see them). HOME points at a scratch folder: the default remote `~/.dvc-remote/...` lands there, not in yours."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.small_project import small_project

pytestmark = pytest.mark.slow

STAGES = ("base_model", "ingest", "clean", "datasets")
# an address with a real local part: JSON's "\n@app.route" or a masked "...@host" are no one's email
EMAIL = re.compile(r"(?<![\w.%+\\-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


def raw_emails(conversations: Path) -> set[str]:
    """Emails in the raw messages' text, decoded from JSON first (rows split on newlines only: the text has U+2028)."""
    with conversations.open(encoding="utf-8") as rows:
        return {email for line in rows
                for message in json.loads(line)["messages"] for email in EMAIL.findall(message["content"])}


def emails_in(folder: Path, emails: set[str]) -> set[str]:
    found = set()
    for path in (p for p in folder.rglob("*") if p.is_file()):
        blob = path.read_bytes()
        found |= {e for e in emails if e.encode() in blob}
    return found


def sh(args: list[str], cwd: Path, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if ok:
        assert done.returncode == 0, f"{args}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    base = tmp_path_factory.mktemp("dvc-remote")
    home, proj = base / "home", base / "project"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}",
           **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
              for what, value in (("NAME", "test"), ("EMAIL", "test@localhost"))}}
    small_project(proj, sections=("ingest", "datasets"), files=("dvc.yaml", ".gitignore", "Makefile"))
    sh(["git", "init", "-q"], proj, env)
    sh(["dvc", "init", "-q"], proj, env)
    shutil.copy(ROOT / ".dvc" / "config", proj / ".dvc" / "config")   # the committed default remote
    sh(["dvc", "repro", "datasets"], proj, env)
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-qm", "cheap stages"], proj, env)
    push = sh([sys.executable, "-m", "tasks", "push"], proj, env)
    url = sh(["dvc", "config", "remote.storage.url"], proj, env).stdout.strip()
    assert Path(url).is_relative_to(home), "the default remote is under ~: every clone of this user shares it"
    return proj, env, Path(url), push.stdout


def fresh_clone(pushed, name: str) -> Path:
    proj, env, _, _ = pushed
    clone = proj.parent / name
    sh(["git", "clone", "-q", str(proj), str(clone)], proj.parent, env)
    (clone / ".venv").symlink_to(ROOT / ".venv")   # what `make setup` would build there
    return clone


@pytest.fixture(scope="module")
def pulled(pushed):
    clone = fresh_clone(pushed, "pulled")
    sh(["dvc", "pull", "--allow-missing"], clone, pushed[1])
    return clone


def test_a_fresh_clone_pulls_the_scrubbed_outputs_and_dvc_repro_has_nothing_to_do(pushed, pulled):
    proj, env, _, push_said = pushed
    assert "not pushed (push: false, raw data with PII): data/ingested;" in push_said
    for name in ("clean/conversations.jsonl", "datasets/sft_train.jsonl", "models/base/model.safetensors"):
        assert (pulled / "data" / name).read_bytes() == (proj / "data" / name).read_bytes(), name
    assert not (pulled / "data" / "ingested").exists()   # never pushed, so never pulled

    repro = sh(["dvc", "repro", "--allow-missing", "datasets"], pulled, env)
    assert "Running stage" not in repro.stdout
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in repro.stdout
    check = sh([sys.executable, "-m", "tasks", "retrain-check", "datasets"], pulled, env)
    assert check.stdout.startswith("nothing to do: 4 stages match dvc.lock")


def test_retrain_check_names_the_stage_and_what_changed(pushed, pulled):
    env = pushed[1]
    params_file, code, lock = pulled / "params.yaml", pulled / "tasks/train/datasets.py", pulled / "dvc.lock"
    originals = {path: path.read_text() for path in (params_file, code, lock)}
    params = yaml.safe_load(originals[params_file])
    params["clean"]["near_dedup"]["threshold"] = 0.5
    params_file.write_text(yaml.safe_dump(params))
    code.write_text(originals[code] + "\n# an edit\n")
    try:
        check = sh([sys.executable, "-m", "tasks", "retrain-check", "datasets"], pulled, env, ok=False)
        assert check.returncode == 1, check.stdout + check.stderr
        old = yaml.safe_load(originals[params_file])["clean"]["near_dedup"]["threshold"]
        assert f"clean: stale\n  - params.yaml: clean.near_dedup.threshold: {old!r} -> 0.5\n" in check.stdout
        assert "datasets: stale\n  - tasks/train/datasets.py: modified\n" in check.stdout
        assert "ingest" not in check.stdout and "base_model" not in check.stdout
        assert check.stdout.rstrip().endswith("stale: clean, datasets -> run the pipeline")

        for path in (params_file, code):
            path.write_text(originals[path])
        locked = yaml.safe_load(originals[lock])   # base_model re-ran alone elsewhere: datasets read another base
        next(o for o in locked["stages"]["base_model"]["outs"] if o["path"] == "data/models/base")["md5"] = \
            "0" * 32 + ".dir"
        lock.write_text(yaml.safe_dump(locked, sort_keys=False))
        shutil.rmtree(pulled / "data/models/base")   # absent, as before a pull: the lock alone tells
        check = sh([sys.executable, "-m", "tasks", "retrain-check", "datasets"], pulled, env, ok=False)
        assert check.returncode == 1
        assert "datasets: stale\n  - data/models/base: base_model recorded another version" in check.stdout
    finally:
        for path, text in originals.items():
            path.write_text(text)
        sh(["dvc", "checkout", "-q", "data/models/base"], pulled, env)
    assert sh([sys.executable, "-m", "tasks", "retrain-check", "datasets"], pulled, env).returncode == 0


def test_the_default_push_carries_no_raw_email_and_include_raw_is_the_explicit_choice(pushed, tmp_path):
    proj, env, remote, _ = pushed
    raw = raw_emails(proj / "data/ingested/conversations.jsonl")
    assert len(raw) >= 5, raw   # the corpus' own addresses and the planted canary
    assert (remote / "files").is_dir()
    assert emails_in(remote, raw) == set()

    sh(["dvc", "remote", "add", "--local", "trusted", str(tmp_path / "trusted")], proj, env)
    said = sh([sys.executable, "-m", "tasks", "push", "--remote", "trusted", "--include-raw"], proj, env).stdout
    assert "raw outputs included" in said
    assert emails_in(tmp_path / "trusted", raw) == raw


def test_make_retrain_check_and_the_workflow_decision_answer_on_a_fresh_clone(pushed, tmp_path):
    """Before any `dvc pull`: code and params are in git, the data's versions in dvc.lock."""
    env = pushed[1]
    clone = fresh_clone(pushed, "unpulled")
    made = sh(["make", "-o", "setup", "retrain-check", "ARGS=datasets"], clone, env)
    assert "nothing to do: 4 stages match dvc.lock" in made.stdout

    decide = next(step for step in yaml.safe_load((ROOT / ".github/workflows/retrain.yml").read_text())
                  ["jobs"]["retrain"]["steps"] if step.get("id") == "check")["run"]
    script = tmp_path / "decide.sh"
    script.write_text(decide.replace("retrain-check >", "retrain-check datasets >"))

    def decision() -> tuple[subprocess.CompletedProcess, str]:
        out = tmp_path / "github_output"
        out.write_text("")
        done = subprocess.run(["bash", "-e", str(script)], cwd=clone, capture_output=True, text=True, check=False,
                              env={**env, "GITHUB_OUTPUT": str(out), "RUNNER_TEMP": str(tmp_path)})
        return done, out.read_text()

    done, said = decision()
    assert (done.returncode, said) == (0, "stale=false\n"), done.stdout + done.stderr
    params = yaml.safe_load((clone / "params.yaml").read_text())
    params["datasets"]["max_tokens"] += 1
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    done, said = decision()
    assert (done.returncode, said) == (0, "stale=true\n"), done.stdout + done.stderr
    assert "params.yaml: datasets.max_tokens" in done.stdout
    (clone / "dvc.yaml").write_text("stages: [")
    done, said = decision()
    assert done.returncode == 2 and said == "" and "cannot tell" in done.stderr


def test_dvc_exp_run_is_its_own_mlflow_pipeline_run_and_dvc_diffs_are_readable(pushed):
    """`dvc exp run -S` on a pulled clone: the experiment lands in MLflow as a parent run named after it, carrying
    the changed param and the stage's headline; `dvc exp show`, `params diff` and `metrics diff` stay a few columns."""
    from mlflow.tracking import MlflowClient

    env = pushed[1]
    clone = fresh_clone(pushed, "experiment")
    sh(["dvc", "pull", "--allow-missing"], clone, env)
    sh(["dvc", "exp", "run", "-n", "lower-dedup", "-S", "clean.near_dedup.threshold=0.5", "clean"], clone, env)

    client = MlflowClient(f"sqlite:///{clone}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("finetune-pipeline")
    parent, = client.search_runs([exp.experiment_id], "tags.`dvc.experiment` = 'lower-dedup'")
    assert parent.info.run_name == "exp lower-dedup" and parent.info.status == "FINISHED"
    assert parent.data.params["clean.near_dedup.threshold"] == "0.5"
    kept = json.loads((clone / "data/metrics/clean.json").read_text())["rows_kept"]
    assert parent.data.metrics["clean.rows_kept"] == kept
    stages = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert "clean" in {r.data.tags["stage"] for r in stages}

    shown = sh(["dvc", "exp", "show", "--md", "--only-changed"], clone, env).stdout
    assert "lower-dedup" in shown and "clean.near_dedup.threshold" in shown
    params = sh(["dvc", "params", "diff", "HEAD", "--md"], clone, env).stdout
    assert "clean.near_dedup.threshold" in params and "0.5" in params
    metrics = sh(["dvc", "metrics", "diff", "HEAD", "--md"], clone, env).stdout
    assert "rows_kept" in metrics
    assert max(len(line) for line in metrics.splitlines()) < 120   # a few numbers per stage, no strings
    before = json.loads(sh(["git", "show", "HEAD:data/metrics/clean.json"], clone, env).stdout)["rows_kept"]
    assert kept < before    # Jaccard 0.5 instead of 0.8 calls more pairs near-duplicates
