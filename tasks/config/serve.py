"""The serving sections of params.yaml: quantize, vllm, serve (tasks/serve/)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tasks.config.section import Fraction, Port, Positive, Seconds, Section

Scheme = Literal["W8A8", "W4A16", "W4A16-GPTQ", "none"]


class QuantizeConfig(Section):
    scheme: Scheme
    group_size: Positive
    ignore: list[str]
    smoothing: float = Field(ge=0, lt=1)       # SmoothQuant's strength before W8A8; 0 = off
    calibration_samples: int = Field(ge=1)     # GPTQ's and SmoothQuant's, from the SFT training set
    compare: list[Scheme]
    gguf: Literal["", "F32", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0"]
    gguf_pre: str


class VllmConfig(Section):
    """Every vLLM server the project starts: smoke_test's, evaluate's (candidate, champion, judge) and `make serve`'s."""
    python: str
    # merged: the quantized merged checkpoint; lora: the base in the serving dtype + the DPO adapter, swapped at run
    # time by `make serve` (tasks/common/adapter_folder.py)
    mode: Literal["merged", "lora"]
    max_lora_rank: Literal[8, 16, 32, 64, 128, 256]  # lora: the largest adapter rank the server accepts
    host: str
    port: Port                                 # 0 = a free port
    max_model_len: Positive
    enforce_eager: bool
    memory_utilization: float = Field(gt=0, le=1)
    dtype: Literal["auto", "bfloat16", "float16", "float32"]  # auto: fp32 on CPUs without native bf16
    startup_timeout_s: Seconds
    request_timeout_s: Seconds                  # one request, queueing included (a slow CPU at high concurrency)
    extra_args: list[str]
    env: dict[str, str]


class ServeConfig(Section):
    """`make serve` (tasks/serve/serve_registry.py): a proxy at host:port in front of vLLM (run with the `vllm`
    settings), following a registry alias, with per-request caps and Prometheus figures logged to MLflow."""
    host: str
    port: Port                                 # the proxy's port, stable across swaps (0 = a free port)
    poll_s: Seconds                            # how often the alias is looked up in the registry
    drain_timeout_s: Seconds                   # the old server finishes its requests for at most this long
    max_n: int = Field(ge=1)                   # caps per request, answered 400 above them (413 for the body size)
    max_tokens: int = Field(ge=1)              # also the limit a request that names none gets
    max_request_bytes: int = Field(ge=1024)
    metrics_interval_s: Seconds              # vLLM's /metrics scraped into MLflow time series this often
    cost_per_hour: float = Field(ge=0)         # what the machine costs, for cost per 1M tokens (0 = not logged)
    record: bool                               # each exchange, scrubbed, to data/feedback/live; POST /v1/feedback on
    compare: Fraction                          # share of chat requests answered by @champion and @challenger (A/B)

    @model_validator(mode="after")
    def _compare_records(self) -> ServeConfig:
        if self.compare and not self.record:
            raise ValueError("serve.compare is an A/B test on recorded traffic: it needs serve.record: true")
        return self


class FlywheelConfig(Section):
    """Served traffic and feedback as the next round's data (tasks/data/feedback.py, tasks/serve/recorder.py)."""
    min_new_rows: int = Field(ge=1)            # feedback rows since the last round that make a retrain due
    rotate_mb: float = Field(gt=0)             # a live file is closed at this size and the next one opened
    retention_days: float = Field(gt=0)        # live files older than this are deleted (closed rounds are kept)
    max_mb: float = Field(gt=0)                # and the oldest live files while the live store is over this
