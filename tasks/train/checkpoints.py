"""Training checkpoints that survive a crash, and never outlive the settings and data they were made from.

They live outside DVC's outs (DVC deletes a stage's outs before re-running it), under
`.checkpoints/<stage>/<fingerprint>/`. The fingerprint covers the stage's config, the seed, the bytes of every
input (data files, base model, upstream adapter), the training code and the library versions, so a re-run after a
crash resumes only when nothing changed; a checkpoint from other params, data or code is deleted, never resumed.
After a successful run the folder is removed.
"""
from __future__ import annotations

import hashlib
import shutil
from importlib.metadata import version
from pathlib import Path

from pydantic import BaseModel

from tasks.common.code_deps import closure

ROOT = Path(".checkpoints")
STATE_FILE = "trainer_state.json"   # HF writes it last: a checkpoint without it was cut off mid-save
# the training stages' code: all that sft.py, dpo.py and reward.py reach through imports (tasks/common/code_deps.py)
CODE = sorted(closure(tuple(Path(__file__).with_name(f"{name}.py") for name in ("sft", "dpo", "reward"))))
LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate")


def _hash_path(digest, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        with open(file, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)


def fingerprint(cfg: BaseModel, seed: int, inputs: list[Path]) -> str:
    """Hash of everything that decides what training produces (~0.5 s for a 260 MB base model)."""
    libraries = ",".join(f"{name}={version(name)}" for name in LIBRARIES)
    digest = hashlib.sha256(f"{cfg.model_dump_json()}|seed={seed}|{libraries}".encode())
    for path in [*inputs, *CODE]:
        _hash_path(digest, Path(path))
    return digest.hexdigest()[:16]


def run_dir(stage: str, key: str, root: Path = ROOT) -> Path:
    """This run's checkpoint folder; folders of the same stage with another fingerprint are stale and go."""
    stage_dir = root / stage
    if stage_dir.is_dir():
        for other in stage_dir.iterdir():
            if other.name != key:
                shutil.rmtree(other, ignore_errors=True)
    return stage_dir / key


def last_complete(folder: Path) -> Path | None:
    """The newest checkpoint that was written to the end (a SIGKILL during a save leaves a partial one)."""
    if not folder.is_dir():
        return None
    done = [p for p in folder.glob("checkpoint-*") if (p / STATE_FILE).exists() and p.name.split("-")[-1].isdigit()]
    return max(done, key=lambda p: int(p.name.split("-")[-1]), default=None)


def remove(folder: Path) -> None:
    """After success: the checkpoints, then the stage folder and the root once empty."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, folder.parent.parent):
        if parent.is_dir() and not any(parent.iterdir()):
            parent.rmdir()
