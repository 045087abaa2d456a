"""`serve.record: true`: each exchange through the serving proxy, and the feedback on it, scrubbed of PII in this
process and appended to the live feedback store (tasks/data/feedback.py). Raw text is never written anywhere.

Why a writer thread: scrubbing a long reply takes milliseconds (the detectors of tasks/data/pii.py), which the
proxy's event loop must not wait on; one thread and a queue also keep an exchange's line before its feedback's. The
id a client quotes in POST /v1/feedback is the answer's own `id` (vLLM's `chatcmpl-...`): it is known as soon as
the answer is relayed, before its line is written, so feedback never races its exchange.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from tasks.config import FlywheelConfig, PiiConfig
from tasks.data.feedback import EVENTS_GLOB, events
from tasks.data.pii import Scrubber
from tasks.paths import Paths

MAX_CAPTURE_BYTES = 4 << 20   # an answer longer than this is relayed but not recorded


def text_of(content) -> str:
    """A message's text: a string, or OpenAI's list of parts (the text ones)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content if isinstance(content, str) else ""


def parse_answer(raw: bytes) -> dict | None:
    """{id, reply, finish_reason, prompt_tokens, completion_tokens} of a chat completion, JSON or server-sent
    events; None when it is neither (an error page, a cut stream without an id)."""
    text = raw.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            return None
        choice = (body.get("choices") or [{}])[0]
        usage = body.get("usage") or {}
        return {"id": body.get("id"), "reply": text_of((choice.get("message") or {}).get("content")),
                "finish_reason": choice.get("finish_reason"), "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens")}
    found = {"id": None, "reply": "", "finish_reason": None, "prompt_tokens": None, "completion_tokens": None}
    for line in text.splitlines():
        if not line.startswith("data:") or line[5:].strip() == "[DONE]":
            continue
        try:
            chunk = json.loads(line[5:])
        except ValueError:
            continue
        found["id"] = found["id"] or chunk.get("id")
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) == 0:
                found["reply"] += text_of((choice.get("delta") or {}).get("content"))
                found["finish_reason"] = choice.get("finish_reason") or found["finish_reason"]
        usage = chunk.get("usage") or {}
        found["prompt_tokens"] = usage.get("prompt_tokens", found["prompt_tokens"])
        found["completion_tokens"] = usage.get("completion_tokens", found["completion_tokens"])
    return found if found["id"] else None


class Recorder:
    """`exchange(...)` and `feedback(...)` queue a line; the writer thread scrubs it and appends it to the live file,
    opening the file for each line (so `cut` may move it at any time), rotating it at flywheel.rotate_mb and applying
    retention and the size cap to the live store whenever it opens a new one."""

    def __init__(self, cfg: FlywheelConfig, pii: PiiConfig, live: Path = Paths.feedback_live):
        self.cfg, self.live, self.scrubber = cfg, Path(live), Scrubber(pii)
        self.live.mkdir(parents=True, exist_ok=True)
        # ids recorded, now or before a restart: feedback on any other id is a 404; compare id -> its two answers
        self.known: set[str] = set()
        self.compares: dict[str, list[str]] = {}
        for _, event, _ in events(self.live.parent):
            if event and event["event"] == "exchange":
                self._remember(event["id"], event.get("compare"))
        self._queue: queue.Queue = queue.Queue(maxsize=10_000)
        self._file: Path | None = None
        self.written = 0
        self._thread = threading.Thread(target=self._write_loop, name="serve-recorder", daemon=True)
        self._thread.start()

    def exchange(self, request: dict, raw_answer: bytes, version: int, latency_s: float,
                 compare: str | None = None) -> str | None:
        """Queue one exchange (a chat completion request and the answer's bytes; `compare`: the id of the A/B pair
        it is one answer of, tasks/serve/compare.py); its id, or None if not recorded."""
        answer = parse_answer(raw_answer)
        messages = request.get("messages")
        if answer is None or not isinstance(messages, list):
            return None
        self._remember(answer["id"], compare)
        self._put({"event": "exchange", "id": answer["id"], "version": version, "latency_s": round(latency_s, 3),
                   "messages": [{"role": str(m.get("role")), "content": text_of(m.get("content"))}
                                for m in messages if isinstance(m, dict)], **answer}
                  | ({"compare": compare} if compare else {}))
        return answer["id"]

    def _remember(self, rid: str, compare: str | None) -> None:
        self.known.add(rid)
        if compare:
            self.compares.setdefault(compare, []).append(rid)

    def feedback(self, rid: str, rating: int | None, correction: str | None, picked_over: str | None = None) -> None:
        """Feedback on answer `rid`; `picked_over`: the other answer of its A/B pair, which the user liked less."""
        self._put({"event": "feedback", "id": rid, "rating": rating, "correction": correction}
                  | ({"picked_over": picked_over} if picked_over else {}))

    def _put(self, event: dict) -> None:
        try:
            self._queue.put_nowait({**event, "ts": time.time()})
        except queue.Full:   # the disk cannot keep up: serving goes on, the loss is counted in the log
            print("feedback recorder: queue full, one event not recorded", flush=True)

    def close(self, timeout_s: float = 10) -> None:
        """Write what is queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _scrubbed(self, event: dict) -> dict:
        found = Counter()

        def scrub(text: str | None) -> str | None:
            if not text:
                return text
            clean, counts = self.scrubber.scrub(text)
            found.update(counts)
            return clean

        for message in event.get("messages", []):
            message["content"] = scrub(message["content"])
        for key in ("reply", "correction"):
            if key in event:
                event[key] = scrub(event[key])
        return {**event, "pii_scrubbed": dict(found)}

    def _write_loop(self) -> None:
        while (event := self._queue.get()) is not None:
            line = json.dumps(self._scrubbed(event), ensure_ascii=False) + "\n"
            path = self._current()
            with open(path, "a", encoding="utf-8") as f:   # one write of one line: O_APPEND keeps lines whole
                f.write(line)
            self.written += 1

    def _current(self) -> Path:
        """The live file to append to: a new one when there is none yet, `cut` moved it, or it is full."""
        if self._file is not None and self._file.exists() and self._file.stat().st_size < self.cfg.rotate_mb * 2**20:
            return self._file
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        self._file = self.live / f"events-{stamp}-{os.getpid()}.jsonl"
        self._expire()
        return self._file

    def _expire(self) -> None:
        """Retention (flywheel.retention_days) and the size cap (flywheel.max_mb) on the live store, oldest first."""
        files = sorted(self.live.glob(EVENTS_GLOB), key=lambda p: p.stat().st_mtime)
        cutoff = time.time() - self.cfg.retention_days * 86400
        total = sum(p.stat().st_size for p in files)
        for path in files:
            if path.stat().st_mtime < cutoff or total > self.cfg.max_mb * 2**20:
                total -= path.stat().st_size
                path.unlink()
