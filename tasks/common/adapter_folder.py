"""A served folder is a whole checkpoint or, with `vllm.mode: lora`, a LoRA adapter that names the base it needs.

Why an adapter folder records its base's digest: an adapter is the model it was trained as only on the exact base
weights it was trained on. The registry keeps adapters (a few MB each) and the base stays in data/models/base; once
params.yaml prepares another base there, an old version served on it would answer as neither model, with no error.
So the folder records the base's path and the md5 of its weights, and serving it on other weights is refused.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

BASE_FILE = "base_model.json"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


class AdapterError(ValueError):
    pass


def weights_md5(model_dir: Path) -> str:
    """md5 of a checkpoint's weight files, in name order (~0.5 s for SmolLM2-135M's 270 MB)."""
    digest = hashlib.md5()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()


def write_adapter_folder(adapter: Path, base: Path, out: Path) -> None:
    """`out`: the adapter's weights and config, the base's tokenizer (what evaluate and `bench serve` load), and
    base_model.json naming the base (as given: a relative path resolves from the project root) and its weights' md5."""
    from transformers import AutoTokenizer

    out.mkdir(parents=True)
    for name in ADAPTER_FILES:
        shutil.copy2(Path(adapter) / name, out / name)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    (out / BASE_FILE).write_text(json.dumps({"path": str(base), "md5": weights_md5(base)}, indent=2))


def is_adapter_folder(folder: Path) -> bool:
    return (Path(folder) / BASE_FILE).exists()


def base_of(folder: Path) -> Path:
    """The base checkpoint `folder`'s adapter is served on; AdapterError when it is missing or holds other weights."""
    recorded = json.loads((Path(folder) / BASE_FILE).read_text())
    base = Path(recorded["path"])
    if not (base / "config.json").exists():
        raise AdapterError(f"the LoRA adapter in {folder} needs its base model at {base}, which is not there: run "
                           "`dvc repro base_model` (or `make pipeline`) in this project first")
    found = weights_md5(base)
    if found != recorded["md5"]:
        raise AdapterError(f"the LoRA adapter in {folder} was trained on base weights with md5 {recorded['md5']}, but "
                           f"{base} now holds weights with md5 {found} (base_model in params.yaml changed?): serve a "
                           "version trained on this base, or prepare the base it was trained on")
    return base


def lora_rank(folder: Path) -> int:
    return int(json.loads((Path(folder) / "adapter_config.json").read_text())["r"])
