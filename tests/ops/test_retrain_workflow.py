"""The retraining workflow (.github/workflows/retrain.yml), checked offline: GitHub's workflow schema (the copy that
ships in check-jsonschema's wheel), its triggers against dvc.yaml, its concurrency, the order and conditions of its
steps, and the syntax of its shell scripts. Its decision step runs for real in tests/ops/test_dvc_remote.py."""
from __future__ import annotations

import re
import shutil
import subprocess

import yaml

from tests.conftest import ROOT

WORKFLOW = ROOT / ".github" / "workflows" / "retrain.yml"


def workflow() -> dict:
    loaded = yaml.safe_load(WORKFLOW.read_text())
    loaded["on"] = loaded.pop(True)   # YAML 1.1 reads the key `on` as true
    return loaded


def steps() -> list[dict]:
    return workflow()["jobs"]["retrain"]["steps"]


def github_glob(pattern: str) -> re.Pattern:
    """GitHub's path filter syntax: `**` crosses folders, `*` does not."""
    parts = (".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
             for part in re.split(r"(\*\*|\*)", pattern))
    return re.compile("".join(parts))


def validate(path) -> subprocess.CompletedProcess:
    return subprocess.run([str(ROOT / ".venv" / "bin" / "check-jsonschema"), "--builtin-schema",
                           "vendor.github-workflows", str(path)], capture_output=True, text=True, check=False)


def test_the_workflow_validates_against_githubs_schema(tmp_path):
    done = validate(WORKFLOW)
    assert done.returncode == 0, done.stdout + done.stderr
    broken = tmp_path / "retrain.yml"   # the same file without the job's runner: the schema must refuse it
    broken.write_text(re.sub(r"\n    runs-on: .*", "", WORKFLOW.read_text()))
    done = validate(broken)
    assert done.returncode != 0 and "runs-on" in done.stdout + done.stderr


def test_every_stage_input_kept_in_git_triggers_a_retrain():
    on = workflow()["on"]
    patterns = [github_glob(p) for p in on["push"]["paths"]]
    assert on["pull_request"]["paths"] == on["push"]["paths"]
    assert on["push"]["branches"] == ["main"] and on["schedule"][0]["cron"] and "workflow_dispatch" in on

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].values()
    outs = [next(iter(o)) if isinstance(o, dict) else o for s in stages for o in s["outs"]]
    made = re.compile("|".join(f"{re.escape(o)}(/.*)?" for o in outs))
    inputs = {d for s in stages for d in s["deps"] if not made.fullmatch(d)}   # code, and data not made by a stage
    inputs |= {"params.yaml", "dvc.yaml", "dvc.lock", ".dvc/config", "data/raw/new_conversations.jsonl.dvc"}
    assert len(inputs) > 40
    assert [p for p in sorted(inputs) if not any(g.fullmatch(p) for g in patterns)] == []
    assert not any(g.fullmatch(p) for g in patterns for p in ("README.md", "tests/ops/test_dvc_remote.py"))


def test_retrains_never_overlap():
    concurrency = workflow()["concurrency"]
    assert "${{" not in concurrency["group"]   # one group for every branch and event: one runner, remote, registry
    assert concurrency["cancel-in-progress"] is False   # a retrain under way finishes


def test_the_steps_decide_pull_run_push_and_report_in_that_order():
    all_steps = steps()

    def at(text: str) -> int:
        return next(i for i, step in enumerate(all_steps) if text in step.get("run", step.get("uses", "")))

    order = ["actions/checkout", "make setup", "python -m tasks retrain-check", "dvc pull --allow-missing",
             "python -m tasks pipeline", "python -m tasks push", "dvc metrics diff --md origin/main",
             "cml comment update", "git push origin HEAD:main"]
    assert [at(text) for text in order] == sorted(at(text) for text in order)
    check = all_steps[at("retrain-check")]
    assert check["id"] == "check" and 'echo "stale=true"' in check["run"]
    for text in ("dvc pull", "tasks pipeline"):
        assert "steps.check.outputs.stale == 'true'" in all_steps[at(text)]["if"]
    push = all_steps[at("tasks push")]
    assert "--include-raw" not in push["run"] and push["if"] == "steps.pipeline.outcome == 'success'"
    report = all_steps[at("dvc metrics diff")]["run"]
    assert "data/registry/report.md" in report and "GITHUB_STEP_SUMMARY" in report
    assert "github.event_name == 'pull_request'" in all_steps[at("cml comment")]["if"]
    assert "github.event_name != 'pull_request'" in all_steps[at("git push")]["if"]


def test_its_shell_scripts_parse(tmp_path):
    for i, step in enumerate(s for s in steps() if "run" in s):
        script = tmp_path / f"step{i}.sh"
        script.write_text(re.sub(r"\$\{\{.*?\}\}", "placeholder", step["run"]))
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{step.get('name')}: {done.stderr}"


def test_a_pull_requests_candidate_cannot_become_champion(tmp_path):
    """The step before the pipeline, run on a copy of params.yaml: gates.promote turns false (register then says
    challenger whatever the gates), and only on pull requests, only when the pipeline runs."""
    from tasks.config import load_config

    all_steps = steps()
    flip = next(s for s in all_steps if "promote: false" in s.get("run", ""))
    assert flip["if"] == "github.event_name == 'pull_request' && steps.check.outputs.stale == 'true'"
    assert all_steps.index(flip) < next(i for i, s in enumerate(all_steps) if "tasks pipeline" in s.get("run", ""))
    shutil.copy(ROOT / "params.yaml", tmp_path)
    assert load_config(tmp_path / "params.yaml").gates.promote is True
    done = subprocess.run(["bash", "-e", "-c", flip["run"]], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert load_config(tmp_path / "params.yaml").gates.promote is False
