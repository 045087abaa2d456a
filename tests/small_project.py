"""A project folder as a user makes one, shrunk to run in minutes: the tests that run the pipeline start from here."""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from tasks.config import changed, load_config
from tests.conftest import ROOT

SMALL = {
    "ingest": {"max_records": 1000},
    "datasets": {"max_tokens": 160, "test_fraction": 0.2, "sft_train_size": 16, "sft_test_size": 8,
                 "pref_train_size": 8, "pref_test_size": 8},
    "pairs": {"max_tokens": 24},
    # 2 steps at 3e-3: held-out ppl 2.6% below the base's (1e-3: 1.4%, 2e-4: 0.3%), a champion a retrain can lose to
    "sft": {"max_steps": 2, "per_device_batch_size": 2, "max_length": 160, "eval_steps": 2, "logging_steps": 1,
            "learning_rate": 3e-3},
    "reward": {"max_steps": 2, "per_device_batch_size": 2, "max_length": 160, "logging_steps": 1},
    "dpo": {"max_steps": 2, "per_device_batch_size": 2, "max_length": 160, "logging_steps": 1},
    "quantize": {"compare": [], "gguf": ""},   # the variants: tests/serve/test_serving.py; here the served one only
    "vllm": {"python": str(ROOT / ".venv-serve" / "bin" / "python")},
    "gates": {"min_pref_accuracy": 0.0},   # 2 DPO steps on 8 pairs: the accuracy limit is for real runs
    "evaluate": {"eval_size": 4, "max_tokens": 24, "concurrency": 2, "load_prompts": 4, "load_output_len": 16,
                 "rag": {"size": 4, "max_tokens": 16}, "judge": {"size": 2, "calibration_size": 1, "ragas_size": 1},
                 "benchmark": {"size": 4}},
}


def small_project(proj: Path, sections=tuple(SMALL), files=("dvc.yaml",), folders=("tasks", "flows")) -> dict:
    """Copy the code and `files` into `proj` and write params.yaml with SMALL's values for `sections`, and always the
    serving env `make setup` built (base_model asks it whether vLLM serves the model); returns the params written, for
    a test to change and write again."""
    for name in folders:
        shutil.copytree(ROOT / name, proj / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in files:
        shutil.copy(ROOT / name, proj)
    cfg = changed(load_config(ROOT / "params.yaml"), **{section: SMALL[section] for section in {*sections, "vllm"}})
    params = cfg.model_dump()          # nested sections merged key by key, and validated as the pipeline validates
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    return params
