"""`make serve`: the registry's @champion behind one stable address, following the alias, until Ctrl-C or SIGTERM.

    python -m tasks serve [--alias champion | --version N] [--port P] [--params params.yaml]

A proxy on serve.host:serve.port (127.0.0.1:8000 by default; tasks/serve/proxy.py) answers OpenAI-compatible
requests under the registered model's name, with per-request caps (serve.max_n, max_tokens, max_request_bytes), and
stamps each answer with `x-model-version`. Behind it, vLLM (the serving env, `vllm` settings) serves the version the
alias points at, fetched once into .cache/champion/vN. Every serve.poll_s the alias is looked up again: when
`promote` or `rollback` moved it, the new version starts beside the old one, traffic moves once it is healthy, and
the old one stops after its last request (tasks/serve/swap.py). `--version N` pins a version and does not follow.
vLLM's Prometheus /metrics go to an MLflow run `serve <name>@<alias>` as time series. A stop signal stops every
vLLM process group before this exits. With serve.record, each chat exchange and the POST /v1/feedback on it are
recorded, scrubbed of PII, as the next training round's data (tasks/serve/recorder.py, tasks/data/feedback.py).
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from tasks import tracking
from tasks.common import prometheus
from tasks.common.vllm_server import ServerError
from tasks.config import apply_runtime_env, load_config
from tasks.serve.proxy import Backend, Proxy
from tasks.serve.recorder import Recorder
from tasks.serve.swap import follow_challenger, retire, swap

# A version that does not come up is tried once more: on the 2-core CPU a server started beside a loaded one stalled
# before its engine started in 1 of 3 runs of the swap test, even on its own core; the old one serves meanwhile.
START_ATTEMPTS = 2


def resolve(name: str, alias: str, version: int | None) -> dict | None:
    """{version, source} of `version`, or of the version `alias` points at; None when there is none."""
    return tracking.champion(name, alias) if version is None else tracking.model_version(name, version)


def banner(name: str, wanted: str, version: int, url: str) -> str:
    return (f"serving {name} version {version} ({wanted}) at {url}/v1 as model {name!r}\n"
            f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json' -d "
            f"'{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'\n"
            "Ctrl-C stops it.")


class Monitor:
    """vLLM's /metrics every serve.metrics_interval_s, as a window since the last scrape, into MLflow series."""

    def __init__(self, interval_s: float, cost_per_hour: float):
        self.interval_s, self.cost_per_hour = interval_s, cost_per_hour
        self.url, self.last = "", None               # the server watched and its last scrape (the window's start)
        self.version, self.step, self.due = None, 0, 0.0

    def tick(self, backend: Backend) -> None:
        if backend.url != self.url:                  # another server: its counters start anew
            self.url, self.last, self.due = backend.url, None, 0.0
        if backend.version != self.version:   # a swap: logged at once, so a version served under one interval shows
            self.version = backend.version
            self.log({"served_version": backend.version})
        if time.monotonic() < self.due:
            return
        self.due = time.monotonic() + self.interval_s
        try:
            snap = prometheus.scrape(backend.url, time.time())
        except OSError:
            return                                   # a restart in progress: the next tick catches up
        if self.last is not None:
            self.log({**prometheus.window(self.last, snap, self.cost_per_hour), "served_version": backend.version})
        self.last = snap

    def log(self, figures: dict[str, float]) -> None:
        tracking.log_series(figures, self.step)
        self.step += 1


def follow(proxy: Proxy, name: str, alias: str, cfg, stop: threading.Event) -> int:
    """Keep the proxy on the version `alias` points at until `stop`; 1 if the serving vLLM dies."""
    monitor, tries, next_poll = Monitor(cfg.serve.metrics_interval_s, cfg.serve.cost_per_hour), {}, 0.0
    while not stop.wait(0.5):
        backend = proxy.current
        if backend.server.proc.poll() is not None:
            print(f"vLLM (version {backend.version}) exited with code {backend.server.proc.returncode}:\n"
                  f"{backend.server.log_tail()}", file=sys.stderr)
            return 1
        monitor.tick(backend)
        if alias == "" or time.monotonic() < next_poll:
            continue
        next_poll = time.monotonic() + cfg.serve.poll_s
        try:
            found = tracking.champion(name, alias)
        except Exception as err:   # noqa: BLE001 -- a registry outage must not stop serving
            print(f"registry lookup failed ({type(err).__name__}: {err}); still serving version {backend.version}",
                  file=sys.stderr)
            continue
        moved = found is not None and found["version"] != backend.version
        if moved and tries.get(found["version"], 0) < START_ATTEMPTS:
            print(f"@{alias} moved: version {backend.version} -> {found['version']}", flush=True)
            try:
                swap(proxy, found, name, cfg.vllm, cfg.serve.drain_timeout_s,
                     started=_promoted(proxy, found, name, cfg))
            except ServerError as err:
                tries[found["version"]] = tries.get(found["version"], 0) + 1
                again = "trying once more" if tries[found["version"]] < START_ATTEMPTS else "not trying again"
                print(f"version {found['version']} did not start ({again}); still serving version {backend.version}:"
                      f"\n{err}", file=sys.stderr, flush=True)
        _compare(proxy, name, cfg)
    return 0


def _promoted(proxy: Proxy, found: dict, name: str, cfg) -> Backend | None:
    """The A/B challenger's backend when it is the version promoted (it takes the traffic as it is); else None, and
    a challenger still compared is stopped first, so the new version gets its cores."""
    challenger = proxy.challenger
    if challenger and challenger.version == found["version"]:
        proxy.challenger = None
        return challenger
    if challenger:
        retire(proxy, challenger, name, cfg.serve.drain_timeout_s)
    return None


def _compare(proxy: Proxy, name: str, cfg) -> None:
    """serve.compare: keep the second version on @challenger (a version other than the champion's)."""
    if not cfg.serve.compare:
        return
    try:
        found = tracking.champion(name, "challenger")
        follow_challenger(proxy, found if found and found["version"] != proxy.current.version else None, name,
                          cfg.vllm, cfg.serve.drain_timeout_s)
    except ServerError as err:
        print(f"@challenger did not start; serving @champion alone:\n{err}", file=sys.stderr, flush=True)
    except Exception as err:   # noqa: BLE001 -- a registry outage must not stop serving
        print(f"registry lookup failed ({type(err).__name__}: {err}); comparing as before", file=sys.stderr)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--version", type=int, help="serve this version and do not follow an alias")
    parser.add_argument("--port", type=int, help="the address users call: default serve.port (0 = a free port)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    if args.port is not None:
        cfg = cfg.model_copy(update={"serve": cfg.serve.model_copy(update={"port": args.port})})
    apply_runtime_env(cfg)
    tracking.configure(cfg.tracking)
    name = cfg.tracking.registered_model
    following = args.alias if args.version is None else ""   # the alias followed; none when a version is pinned
    wanted = f"@{following}" if following else f"version {args.version}"
    found = resolve(name, args.alias, args.version)
    if found is None:
        print(f"no {wanted} of {name!r} in the registry at {cfg.tracking.tracking_uri}: run `make pipeline` first, "
              "or pick one with --alias / --version", file=sys.stderr)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):   # set before the start, so a signal during it still stops vLLM
        signal.signal(sig, lambda *_: stop.set())
    recorder = Recorder(cfg.flywheel, cfg.clean.pii) if cfg.serve.record else None
    proxy = Proxy(cfg.serve, cfg.vllm.request_timeout_s, recorder)
    try:
        proxy.start()
    except OSError as err:
        print(err, file=sys.stderr)
        return 1
    code = 0
    try:
        with tracking.serving_run(name, following or f"v{args.version}", {"serve.url": proxy.url}):
            swap(proxy, found, name, cfg.vllm, cfg.serve.drain_timeout_s)
            if following:
                _compare(proxy, name, cfg)
            print(banner(name, wanted, found["version"], proxy.url), flush=True)
            if recorder:
                print(f"recording exchanges, scrubbed, to {recorder.live}; feedback: POST {proxy.url}/v1/feedback "
                      '{"id": "<the answer\'s id>", "rating": 1 | -1, "correction": "..."}', flush=True)
            code = follow(proxy, name, following, cfg, stop)
    except ServerError as err:
        print(err, file=sys.stderr)
        code = 1
    finally:
        proxy.stop()
        for backend in (proxy.current, proxy.challenger):
            if backend:
                backend.server.stop()
        if recorder:
            recorder.close()
    if code == 0:
        print("stopped", flush=True)
    return code
