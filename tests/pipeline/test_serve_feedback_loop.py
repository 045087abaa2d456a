"""The data flywheel end to end, as a team runs it (issue 24): the pipeline's champion behind `make serve` with
recording on; a scripted user asks, and corrects every answer to open with one visible phrase; `retrain-check` says
run, naming the feedback; the flow closes the round, continues the champion on it plus a replay share of the corpus,
promotes the new version through the gates, and `make serve` swaps to it under load with no failed request. The new
version opens its answers with the phrase far more often, and no PII the user typed is on disk, in MLflow or in the
DVC remote. Runs after the other pipeline tests (file order): it adds a pipeline run to the shared project."""
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import yaml

from tests.serve.test_serve_registry import NAME, Load, cli, read_until, serve

pytestmark = pytest.mark.slow
PHRASE = "Great question!"
EMAIL, KEY = "ana.reyes.5521@example.org", "sk-live-4hT9qW2xZ7mB3nV8cR5kL1pD6sF0gJ"   # what must never be stored
TOPICS = ["a list", "a string", "a file", "a folder", "a date", "a number", "a table", "a photo", "a song", "a note",
          "an email draft", "a password", "a budget", "a recipe", "a timetable", "a map", "a report", "a poem"]
VERBS = ["sort", "copy", "rename", "share", "print", "back up"]


def asks(n: int) -> list[str]:
    return [f"How do I {VERBS[(i + i // len(TOPICS)) % len(VERBS)]} {TOPICS[i % len(TOPICS)]}?" for i in range(n)]


def chat(url: str, prompt: str) -> dict:
    body = {"model": NAME, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16, "temperature": 0}
    req = urllib.request.Request(f"{url}/v1/chat/completions", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=300) as resp:
        out = json.loads(resp.read())
        return {"id": out["id"], "reply": out["choices"][0]["message"]["content"],
                "version": resp.headers["x-model-version"]}


def feedback(url: str, **body) -> int:
    req = urllib.request.Request(f"{url}/v1/feedback", json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def share(url: str, prompts: list[str]) -> tuple[float, str]:
    """Share of greedy answers that open with the phrase, and the version that gave them."""
    answers = [chat(url, p) for p in prompts]
    return sum(a["reply"].lstrip().startswith(PHRASE) for a in answers) / len(answers), answers[-1]["version"]


def everything_on_disk(*roots) -> str:
    return "\n".join(p.read_bytes().decode("utf-8", "replace") for root in roots for p in root.rglob("*")
                     if p.is_file() and p.stat().st_size < 50 << 20)


def test_served_feedback_becomes_a_gated_round_that_serve_swaps_to(project, worse_retrain, tmp_path):
    proj, env, _ = project
    params = yaml.safe_load((proj / "params.yaml").read_text())
    before = json.loads((proj / "data/registry/registration.json").read_text())
    subprocess.run(["dvc", "remote", "add", "-d", "-f", "store", str(tmp_path / "remote")], cwd=proj, env=env,
                   check=True)
    params["serve"] |= {"record": True, "port": 0, "poll_s": 2}
    params["flywheel"]["min_new_rows"] = 30
    # the flywheel as README's "Closing the loop" sets it up: the feedback rounds as a source beside the corpus (its
    # replay share), each round continuing the champion; and the allowances a team sets for a round that is meant to
    # change the answers' style (each is still a check against the champion, on the same rows). RAG similarity: 4
    # questions of 16 tokens, 4 of them now the phrase; it moved +0.38 and -0.29 in two runs of this test
    params["ingest"]["sources"] = [{"path": "sharegpt-package", "weight": 0.5},
                                   {"path": "data/feedback/rounds", "kind": "feedback", "weight": 0.5}]
    params["sft"] |= {"init_from": "champion", "learning_rate": 3e-3, "max_steps": 24, "per_device_batch_size": 2}
    params["dpo"] |= {"method": "dpo", "learning_rate": 2e-4}
    params["datasets"]["sft_train_size"] = 32
    # the judges cost this round ~3 min and decide nothing here (the small judge is not calibrated: shown, not gated)
    params["evaluate"]["judge"] |= {"size": 0, "calibration_size": 0, "ragas_size": 0}
    params["gates"]["vs_champion"] |= {"max_ppl_ratio": 1.15, "max_forgetting_ppl_ratio": 1.15, "max_rouge_l_drop": 0.1,
                                       "max_rag_similarity_drop": 0.4, "max_benchmark_acc_drop": 0.25}
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    assert cli(proj, "dvc-yaml").returncode == 0
    assert "feedback rows" not in cli(proj, "retrain-check").stdout
    champion = before["version"] if before["alias"] == "champion" else before["champion_before"]
    serving = serve(proj)
    m = re.match(r"serving .* at (http://127\.0\.0\.1:\d+)/v1", read_until(serving, "serving", []))
    assert m, serving.stderr.read()[-3000:]
    url = m.group(1)
    try:
        held_out = [f"How do I {verb} {topic}?" for verb in ("delete", "find") for topic in TOPICS[:4]]   # not asked
        share_before, v_before = share(url, held_out)
        # the user: 30 questions, each answer corrected to open with the phrase; one with PII in it
        asked = asks(30)
        asked[0] = f"My email is {EMAIL} and my key is {KEY}. How do I sort a list?"
        for prompt in asked:
            got = chat(url, prompt)
            assert feedback(url, id=got["id"], correction=f"{PHRASE} {got['reply'].strip() or 'Here is how.'}") == 200
        assert feedback(url, id="chatcmpl-never-given", rating=1) == 404

        check = cli(proj, "retrain-check")
        assert check.returncode == 1 and "30 feedback rows since the last round (30 corrected" in check.stdout, \
            check.stdout + check.stderr

        t0 = time.monotonic()
        run = subprocess.run([sys.executable, "-m", "tasks", "pipeline"], cwd=proj, env=env, capture_output=True,
                             text=True)
        round_s = time.monotonic() - t0
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
        assert (proj / "data/feedback/rounds/round-0001").is_dir() and (proj / "data/feedback/rounds.dvc").exists()
        sft = json.loads((proj / "data/stages/sft.json").read_text())
        ingest = json.loads((proj / "data/stages/ingest.json").read_text())
        after = json.loads((proj / "data/registry/registration.json").read_text())
        pairs = json.loads((proj / "data/stages/pairs.json").read_text())
        assert sft["init_from"] == f"champion v{champion}"
        assert ingest["by_source"]["rounds"]["feedback"] == {"corrected": 30, "pairs": 30}
        assert pairs["from_feedback"] >= 1        # corrections over the replies they replaced lead the pairs
        assert after["alias"] == "champion", after["why"]
        forgot = next(g for g in after["gates"] if g["gate"].startswith("served ppl on the champion's held-out"))
        assert forgot["passed"] and "skipped" not in forgot   # scored on the rows the champion was evaluated on
        report = (proj / "data/registry/report.md").read_text()
        assert "Feedback from serving (`rounds`): 30 corrected, 30 pairs; 30 became training conversations" in report

        load = Load(f"{url}/v1")                      # make serve follows the alias while clients keep asking
        load.wait_for_version(str(after["version"]), serving)
        results = load.finish()
        share_after, v_after = share(url, held_out)
    finally:
        serving.terminate()
        serving.communicate(timeout=120)
    failed = [r for r in results if r[0] != 200]
    forgetting = {g["gate"]: (g["value"], g["limit"]) for g in after["gates"] if "champion" in g["gate"]}
    print(f"flywheel: share of answers opening with {PHRASE!r} v{v_before} {share_before:.2f} -> v{v_after} "
          f"{share_after:.2f}; round {round_s:.0f} s; vs champion {forgetting}; {len(results)} requests in the swap")
    assert not failed and v_after == str(after["version"])
    assert share_after >= share_before + 0.5, (share_before, share_after)
    stored = everything_on_disk(proj / "data", proj / "mlruns", proj / ".dvc", proj / ".serve-logs", tmp_path)
    assert EMAIL not in stored and KEY not in stored
