"""`serve.compare`: A/B on live traffic. A share of chat requests goes to both @champion and @challenger; the user
gets one answer chosen blind (the default: clients see nothing new), or both, in random order, when the request
says `x-compare: both`, to pick one with POST /v1/feedback {"id": <compare id>, "chosen": <answer id>}.

Both answers are recorded (scrubbed) under one compare id, so a rating on either, or a pick, is a preference
between two versions on the same prompt: a pair for training (tasks/data/feedback.py) and, counted by version, the
online win rate of the challenger (`python -m tasks flywheel`). The challenger never costs the user an answer: when
it fails, the champion's answer is returned alone and nothing is compared.
"""
from __future__ import annotations

import asyncio
import json
import random
import time
import uuid

import httpx
from starlette.responses import JSONResponse, Response

from tasks.serve.recorder import Recorder

PATH = "/v1/chat/completions"
BOTH = "x-compare"   # request header: "both" returns both answers


def wanted(share: float, path: str, body: dict | None) -> bool:
    """Whether this request is one of the compared share (non-streaming chat requests only)."""
    return share > 0 and path == PATH and body is not None and not body.get("stream") and random.random() < share


async def _ask(client: httpx.AsyncClient, backend, body: dict, served_name: str) -> tuple[object, dict | None, bytes]:
    """(backend, the parsed answer or None, its raw bytes) of one backend's answer to `body`."""
    mine = {**body, "model": backend.renamed.get(served_name, body.get("model", served_name))}
    try:
        response = await client.post(f"{backend.url}{PATH}", json=mine)
    except httpx.HTTPError:
        return backend, None, b""
    return backend, response.json() if response.status_code == 200 else None, response.content


async def answer_both(client: httpx.AsyncClient, pair: list, body: dict, recorder: Recorder, both: bool,
                      release) -> Response:
    """Ask the champion and the challenger (`pair`, both acquired by the caller, released here through `release`)
    the same `body`; record both answers under one compare id; answer with one (blind) or both."""
    started = time.monotonic()
    try:
        results = await asyncio.gather(*(_ask(client, b, body, body.get("model", "")) for b in pair))
    finally:
        for backend in pair:
            release(backend)
    answered = [(b, parsed, raw) for b, parsed, raw in results if parsed is not None]
    if len(answered) < 2:   # the challenger (or both) failed: the champion's answer, or its error, uncompared
        backend, parsed, raw = results[0]
        if parsed is None:
            return JSONResponse({"error": {"message": f"model version {backend.version} did not answer",
                                           "type": "upstream_error", "code": 502}}, status_code=502)
        recorder.exchange(body, raw, backend.version, time.monotonic() - started)
        return Response(raw, media_type="application/json", headers={"x-model-version": str(backend.version)})
    cid = f"cmp-{uuid.uuid4().hex}"
    for backend, _, raw in answered:
        recorder.exchange(body, raw, backend.version, time.monotonic() - started, compare=cid)
    random.shuffle(answered)
    if both:
        return JSONResponse({"id": cid, "object": "chat.completion.compare",
                             "answers": [parsed | {"model_version": b.version} for b, parsed, _ in answered]},
                            headers={"x-compare-id": cid})
    backend, _, raw = answered[0]
    return Response(raw, media_type="application/json",
                    headers={"x-model-version": str(backend.version), "x-compare-id": cid})


def check_pick(body: dict, recorder: Recorder) -> tuple[int, str]:
    """(0, '') when `body` {"id": compare id, "chosen": answer id} names a compared pair and one of its answers;
    else (status, why)."""
    answers = recorder.compares.get(body["id"])
    if answers is None:
        return 404, f"no compared request has id {body['id']!r}: quote the `id` of a compare answer (x-compare: both)"
    if body["chosen"] not in answers:
        return 400, f"chosen must be the id of one of the two answers of {body['id']}: {json.dumps(answers)}"
    return 0, ""
