"""What vLLM's own Prometheus `/metrics` says about a window of serving: latency quantiles, load, tokens/s, cost.

vLLM exports histograms and counters since its start; two scrapes give a window. Quantiles come from the window's
bucket counts with Prometheus' `histogram_quantile` interpolation, so they match what a Grafana panel on the same
server would show. Used by `make serve` (a time series in MLflow) and by the serving benchmark (one window per run).
"""
from __future__ import annotations

import math
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

LATENCIES = {"ttft_s": "vllm:time_to_first_token_seconds", "itl_s": "vllm:inter_token_latency_seconds",
             "e2e_s": "vllm:e2e_request_latency_seconds", "queue_s": "vllm:request_queue_time_seconds"}
GAUGES = {"kv_cache_usage": "vllm:kv_cache_usage_perc", "requests_running": "vllm:num_requests_running",
          "requests_waiting": "vllm:num_requests_waiting"}
COUNTERS = {"prompt_tokens_per_s": "vllm:prompt_tokens", "output_tokens_per_s": "vllm:generation_tokens",
            "requests_per_s": "vllm:request_success"}


@dataclass
class Snapshot:
    """One scrape: every sample summed over its labels (but `le`), histogram buckets by upper bound."""
    at: float
    values: dict[str, float] = field(default_factory=dict)
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)


def parse(text: str, at: float) -> Snapshot:
    snap = Snapshot(at)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                hist = snap.buckets.setdefault(sample.name.removesuffix("_bucket"), {})
                hist[le] = hist.get(le, 0.0) + sample.value
            else:
                snap.values[sample.name] = snap.values.get(sample.name, 0.0) + sample.value
    return snap


def scrape(base_url: str, at: float, timeout: float = 5) -> Snapshot:
    with urllib.request.urlopen(f"{base_url}/metrics", timeout=timeout) as resp:
        return parse(resp.read().decode(), at)


def quantile(q: float, buckets: dict[float, float]) -> float:
    """Prometheus' histogram_quantile over cumulative bucket counts: linear within the bucket holding rank q."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0.0
    if total <= 0:
        return math.nan
    rank, lower, below = q * total, 0.0, 0.0
    for upper in bounds:
        count = buckets[upper]
        if count >= rank:
            if math.isinf(upper):
                return lower                 # past the last finite bound: its lower edge, as Prometheus does
            return lower + (upper - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = upper, count
    return lower


def window(before: Snapshot, after: Snapshot, cost_per_hour: float = 0.0) -> dict[str, float]:
    """The figures of the time between two scrapes of one server (a restart between them reads as no traffic)."""
    seconds = max(after.at - before.at, 1e-9)
    out: dict[str, float] = {}
    for key, name in LATENCIES.items():
        new, old = after.buckets.get(name, {}), before.buckets.get(name, {})
        delta = {le: count - old.get(le, 0.0) for le, count in new.items()}
        if delta and max(delta.values()) > 0:
            out[f"{key}_p50"] = round(quantile(0.5, delta), 4)
            out[f"{key}_p99"] = round(quantile(0.99, delta), 4)
    for key, name in GAUGES.items():
        if name in after.values:
            out[key] = after.values[name]
    for key, name in COUNTERS.items():
        total = f"{name}_total"
        if total in after.values:
            out[key] = round(max(after.values[total] - before.values.get(total, 0.0), 0.0) / seconds, 3)
    if cost_per_hour > 0 and out.get("output_tokens_per_s", 0) > 0:
        out["cost_per_1m_output_tokens"] = round(cost_per_hour / 3600 / out["output_tokens_per_s"] * 1e6, 4)
    return out
