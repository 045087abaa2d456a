"""The feedback store without a model: the recorder scrubs before anything touches disk, rotates and expires the live
store, POST /v1/feedback on the real proxy refuses what it cannot record, and a cut round reads back as SFT rows."""
import json
import os
import time
import urllib.error
import urllib.request
from collections import Counter

import pytest

from tasks.config import load_config
from tasks.data.feedback import cut, due, feedback_records, pending, picks_by_version
from tasks.serve.proxy import Proxy
from tasks.serve.recorder import Recorder, parse_answer
from tests.conftest import ROOT, configured

CFG = load_config(ROOT / "params.yaml")
EMAIL, KEY = "maya.lin.7731@example.com", "sk-live-9fQ2xW7bT4mZ8kR3vL6pN1sD5hJ0aC"   # the canaries of this file


def answer(rid: str, reply: str) -> bytes:
    return json.dumps({"id": rid, "choices": [{"index": 0, "message": {"role": "assistant", "content": reply},
                                                "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 9, "completion_tokens": 4}}).encode()


def stream(rid: str, parts: list[str]) -> bytes:
    chunks = [{"id": rid, "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in parts]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks).encode() + b"data: [DONE]\n\n"


def test_answers_parse_from_json_and_from_a_stream():
    assert parse_answer(answer("chatcmpl-1", "Hi there"))["reply"] == "Hi there"
    streamed = parse_answer(stream("chatcmpl-2", ["Hel", "lo", "!"]))
    assert streamed["id"] == "chatcmpl-2" and streamed["reply"] == "Hello!"
    assert parse_answer(b'{"error": {"message": "bad"}}')["id"] is None and parse_answer(b"<html>") is None


def record(live, exchanges: list[tuple[str, str, str]], feedback: list[tuple[str, int | None, str | None]],
           **flywheel) -> Recorder:
    recorder = Recorder(configured("flywheel", **flywheel), CFG.clean.pii, live)
    for rid, prompt, reply in exchanges:
        recorder.exchange({"messages": [{"role": "user", "content": prompt}]}, answer(rid, reply), 1, 0.1)
    for rid, rating, correction in feedback:
        recorder.feedback(rid, rating, correction)
    recorder.close()
    return recorder


def test_no_pii_reaches_disk_and_rounds_become_sft_rows(tmp_path):
    live, rounds = tmp_path / "live", tmp_path / "rounds"
    record(live, [("a", f"Mail me at {EMAIL} please, how do I sort a list?", "Use sorted()."),
                  ("b", "How do I reverse a string?", f"Use s[::-1]. My key is {KEY}"),
                  ("c", "What is a tuple?", "A list."), ("d", "Name a prime.", "Four.")],
           [("a", 1, None), ("b", None, "Use slicing: s[::-1]."), ("c", -1, None), ("d", -1, "Seven.")])
    stored = "".join(p.read_text() for p in live.glob("*.jsonl"))
    assert EMAIL not in stored and KEY not in stored and "sk-live" not in stored
    assert stored.count('"event": "exchange"') == 4 and stored.count('"event": "feedback"') == 4
    assert pending(live) == Counter(liked=1, corrected=2, disliked=1)
    assert due(4, live) and not due(5, live)
    assert cut(5, live=live, rounds=rounds) is None                 # not due: nothing moves
    folder = cut(4, live=live, rounds=rounds)
    assert folder.name == "round-0001" and not list(live.glob("*.jsonl")) and pending(live).total() == 0
    counts = Counter()
    rows = {r["id"]: r["messages"] for _, r, _ in feedback_records(rounds, counts)}
    assert rows["a"][-1]["content"] == "Use sorted()."
    assert EMAIL not in rows["a"][0]["content"] and rows["a"][0]["content"].endswith("how do I sort a list?")
    assert rows["b"][-1]["content"] == "Use slicing: s[::-1]." and rows["d"][-1]["content"] == "Seven."
    assert "c" not in rows and counts == Counter(liked=1, corrected=2, disliked=1, pairs=2)


def test_live_files_rotate_and_the_oldest_go_past_retention_and_the_size_cap(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    old = live / "events-19990101T000000000000-1.jsonl"
    old.write_text("{}\n")
    os.utime(old, (time.time() - 3 * 86400,) * 2)
    long = "x" * 3000
    record(live, [(f"r{i}", long, long) for i in range(6)], [], rotate_mb=0.01, retention_days=2, max_mb=0.02)
    files = sorted(live.glob("*.jsonl"))
    assert not old.exists()                                         # past retention_days
    assert len(files) >= 1 and sum(p.stat().st_size for p in files) <= 0.02 * 2**20 + 12_000   # the cap, oldest out
    assert all(p.stat().st_size < 0.01 * 2**20 + 12_000 for p in files)   # rotated at rotate_mb (+ one line)


@pytest.fixture
def proxy(tmp_path):
    recorder = Recorder(CFG.flywheel, CFG.clean.pii, tmp_path / "live")
    recorder.exchange({"messages": [{"role": "user", "content": "hi"}]}, answer("chatcmpl-known", "hello"), 1, 0.1)
    server = Proxy(configured("serve", port=0), recorder=recorder).start()
    yield server, recorder
    server.stop()


def post(url: str, body) -> tuple[int, str]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(f"{url}/v1/feedback", data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())["error"]["message"]


@pytest.mark.parametrize("body, status, said", [
    ({"id": "chatcmpl-nope", "rating": 1}, 404, "no recorded answer"),
    ({"id": "chatcmpl-known"}, 400, "needs a rating"),
    ({"id": "chatcmpl-known", "rating": 5}, 400, "rating must be 1 or -1"),
    ({"id": "chatcmpl-known", "rating": True}, 400, "rating must be 1 or -1"),
    ({"id": "chatcmpl-known", "correction": "  "}, 400, "correction must be"),
    ({"id": "chatcmpl-known", "stars": 3}, 400, "unknown key"),
    ([1, 2], 400, "JSON object"),
    (b"{not json", 400, "not JSON"),
    ({"id": "chatcmpl-known", "correction": "x" * 300_000}, 413, "max_request_bytes"),
    ({"id": "cmp-nope", "chosen": "chatcmpl-known"}, 404, "no compared request"),
    ({"id": "cmp-x", "chosen": 5}, 400, "chosen is the id"),
    ({"id": "cmp-x", "chosen": "chatcmpl-known", "rating": 1}, 400, "chosen is the id"),
])
def test_feedback_the_proxy_cannot_record_is_refused_saying_why(proxy, body, status, said):
    server, recorder = proxy
    code, message = post(server.url, body)
    assert (code, said in message) == (status, True), message
    recorder.close()
    assert "feedback" not in "".join(p.read_text() for p in recorder.live.glob("*.jsonl"))


def test_feedback_on_a_recorded_answer_is_stored_scrubbed(proxy):
    server, recorder = proxy
    code, said = post(server.url, {"id": "chatcmpl-known", "rating": -1, "correction": f"Write to {EMAIL}."})
    assert code == 200 and json.loads(said) == {"id": "chatcmpl-known", "recorded": True}
    recorder.close()
    lines = [json.loads(line) for p in recorder.live.glob("*.jsonl") for line in p.read_text().splitlines()]
    assert lines[-1]["event"] == "feedback" and EMAIL not in lines[-1]["correction"]
    assert lines[-1]["pii_scrubbed"] == {"email": 1}


def test_without_recording_feedback_is_a_404_that_says_how_to_turn_it_on():
    server = Proxy(configured("serve", port=0)).start()
    try:
        code, said = post(server.url, {"id": "x", "rating": 1})
    finally:
        server.stop()
    assert code == 404 and "serve.record: true" in said


def test_an_ab_pick_is_a_pair_and_a_win_for_its_version(tmp_path):
    live, rounds = tmp_path / "live", tmp_path / "rounds"
    recorder = Recorder(CFG.flywheel, CFG.clean.pii, live)
    ask = {"messages": [{"role": "user", "content": "Name a prime."}]}
    recorder.exchange(ask, answer("a1", "Four."), 1, 0.1, compare="cmp-1")
    recorder.exchange(ask, answer("a2", "Seven."), 2, 0.1, compare="cmp-1")
    assert recorder.compares == {"cmp-1": ["a1", "a2"]}
    recorder.feedback("a2", None, None, picked_over="a1")
    recorder.close()
    assert Recorder(CFG.flywheel, CFG.clean.pii, live).compares == {"cmp-1": ["a1", "a2"]}   # after a restart too
    assert picks_by_version(tmp_path) == Counter(v2=1)
    cut(1, live=live, rounds=rounds)
    counts = Counter()
    rows = [r for _, r, _ in feedback_records(rounds, counts)]
    assert rows == [{"id": "a2", "messages": [*ask["messages"], {"role": "assistant", "content": "Seven."}],
                     "rejected": "Four."}]
    assert counts == Counter(picked=1, picked_v2=1, pairs=1)
