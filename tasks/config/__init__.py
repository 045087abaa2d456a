"""Typed settings from params.yaml: the one package that reads it (a module of sections per phase beside this one).

params.yaml is the one place where values live. The classes validate it and hold no values of their own: every
field is required, so a key missing from params.yaml fails loudly, as does an unknown or misspelled one, and no code
can build a configuration from defaults that differ from the pipeline's (tests/test_config.py proves both).
`ParamsView` is what a stage is handed: only the keys it declares in tasks/stages.py, which are also its DVC params and
its MLflow params.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ValidationError

from tasks.config.data import (  # noqa: F401 - the sections, importable from here
    CleanConfig,
    DecontaminationConfig,
    ExecutorConfig,
    IngestConfig,
    NearDedupConfig,
    NormaliseConfig,
    PerplexityConfig,
    PiiConfig,
    PiiType,
    QualityConfig,
    SourceConfig,
    ToxicityConfig,
)
from tasks.config.errors import ConfigError, validation_error, yaml_error
from tasks.config.evaluate import (  # noqa: F401
    BenchmarkConfig,
    EvaluateConfig,
    GatesConfig,
    JudgeConfig,
    RagConfig,
    VsChampionConfig,
)
from tasks.config.section import S, Section
from tasks.config.serve import FlywheelConfig, QuantizeConfig, Scheme, ServeConfig, VllmConfig  # noqa: F401
from tasks.config.train import (  # noqa: F401
    ONLINE_METHODS,
    DatasetsConfig,
    DpoConfig,
    PairsConfig,
    RewardConfig,
    RuleRewards,
    SftConfig,
    TrainConfig,
)


class RuntimeConfig(Section):
    offline: bool
    seed: int


class TrackingConfig(Section):
    tracking_uri: str
    artifact_root: str
    experiment: str
    registered_model: str


class BaseModelConfig(Section):
    source: str
    dtype: Literal["bfloat16", "float16", "float32"]


class Config(Section):
    runtime: RuntimeConfig
    tracking: TrackingConfig
    base_model: BaseModelConfig
    ingest: IngestConfig
    clean: CleanConfig
    datasets: DatasetsConfig
    sft: SftConfig
    pairs: PairsConfig
    reward: RewardConfig
    dpo: DpoConfig
    quantize: QuantizeConfig
    vllm: VllmConfig
    serve: ServeConfig
    flywheel: FlywheelConfig
    evaluate: EvaluateConfig
    gates: GatesConfig


TELEMETRY_OFF = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "RAGAS_DO_NOT_TRACK": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def _set(cfg: dict, dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    for key in parents:
        cfg = cfg.setdefault(key, {})
    cfg[leaf] = yaml.safe_load(value)


def load_config(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read params.yaml; `overrides` are `section.key=value` strings (torchtune-style) for tests and one-off runs.
    Any mistake is a ConfigError of one line (tasks/config/errors.py)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the settings: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise yaml_error(path, err) from err
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        _set(raw, key, value)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected sections (runtime:, ingest:, ...), found a {type(raw).__name__}")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        raise validation_error(path, err, Config) from err


def apply_runtime_env(cfg: Config) -> None:
    """Telemetry off and hub access per params; must run before transformers or mlflow is imported."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("PREFECT_HOME", str(Path(".prefect").resolve()))
    if cfg.runtime.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"


class UndeclaredParam(AttributeError):
    pass


class ParamsView:
    """The config as one stage sees it: the keys it declares (tasks/stages.py) and nothing else. Reading another key
    raises, so no stage depends on a setting that DVC does not track for it and MLflow does not record for it."""

    def __init__(self, node: BaseModel, keys: tuple[str, ...], stage: str, prefix: str = ""):
        self._node, self._keys, self._stage, self._prefix = node, keys, stage, prefix

    def __getattr__(self, name: str):
        path = f"{self._prefix}{name}"
        if path in self._keys:
            return getattr(self._node, name)
        if any(key.startswith(f"{path}.") for key in self._keys):
            return ParamsView(getattr(self._node, name), self._keys, self._stage, f"{path}.")
        raise UndeclaredParam(f"stage {self._stage!r} reads {path}, which its params in tasks/stages.py do not list "
                              f"({', '.join(self._keys)}): declare it, so that DVC and MLflow track it")


def changed(section: S, **changes) -> S:
    """`section` with `changes` (a nested section as a dict or a section, merged key by key), validated again:
    `model_copy(update=...)` would skip validation."""
    return type(section).model_validate(_merged(section.model_dump(), changes))


def _merged(base: dict, changes: dict) -> dict:
    out = dict(base)
    for key, value in changes.items():
        value = value.model_dump() if isinstance(value, BaseModel) else value
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def value_at(cfg: BaseModel, dotted: str):
    """The value of a dotted key (`clean.near_dedup.threshold`), a section for a section's name."""
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def flat_params(cfg: Config, keys: tuple[str, ...]) -> dict[str, object]:
    """The leaves under each dotted key as {`section.key...`: value}: what MLflow records for a stage."""
    out = {}
    for key in keys:
        out.update(flatten(_plain(value_at(cfg, key)), key))
    return out


def _plain(value):
    """Sections, and lists of them (`ingest.sources`), as the dicts and lists params.yaml writes, not their repr."""
    if isinstance(value, BaseModel):
        return value.model_dump()
    return [_plain(v) for v in value] if isinstance(value, list) else value


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested dicts as {"a.b.c": leaf}, the way params, DVC and MLflow name a setting or a figure; an empty dict has
    no leaves."""
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, inner in value.items()
            for k, v in flatten(inner, f"{prefix}.{key}" if prefix else str(key)).items()}
