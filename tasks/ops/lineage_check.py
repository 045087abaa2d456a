"""Does this workspace hold the data a registered version was made from? (`python -m tasks lineage --check`)

A version's `dvc.md5.<path>` tags are dvc.lock's outputs at the moment it was registered. The workspace holds the
same data when its dvc.lock records the same md5 for each of them and the data can be had: a cached output's object
is in the DVC cache (a directory's `.dir` manifest and every file it lists: what `dvc checkout` restores from), and
an output DVC does not cache (`cache: false`: the metrics and small JSON files) is in the workspace with that md5,
since the workspace is its only copy. The registering stage's own outputs are left out: they are written after the
version was tagged, so the tags hold their previous md5.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from tasks import tracking


def declared_outputs(dvc_file: Path = Path("dvc.yaml")) -> dict[str, dict]:
    """Every output dvc.yaml declares: {path: {stage, kind (outs|metrics|plots), cache}}."""
    stages = (yaml.safe_load(dvc_file.read_text()) or {}).get("stages", {}) if dvc_file.exists() else {}
    found = {}
    for name, stage in stages.items():
        for kind in ("outs", "metrics", "plots"):
            for item in stage.get(kind) or []:
                path, options = (item, {}) if isinstance(item, str) else next(iter(item.items()))
                found[path] = {"stage": name, "kind": kind, "cache": (options or {}).get("cache", True)}
    return found


def owner(path: str, outputs) -> str | None:
    """The declared output holding `path`: itself, or the directory output it lies in."""
    return next((out for out in outputs if path == out or path.startswith(out + "/")), None)


def locked_outputs(lock_file: Path = Path("dvc.lock")) -> dict[str, str]:
    return {key.removeprefix("dvc.md5."): md5 for key, md5 in tracking.data_versions(lock_file).items()}


def cache_dir(root: Path = Path(".")) -> Path | None:
    """Where DVC keeps this project's objects (.dvc/cache/files/md5 unless `cache.dir` says otherwise); None outside a
    DVC project. DVC's config is read, the repository is not opened: opening it writes (.gitignore entries)."""
    from dvc.config import Config

    dvc_dir = root / ".dvc"
    if not dvc_dir.is_dir():
        return None
    configured = Config(dvc_dir=str(dvc_dir))["cache"].get("dir")
    return Path(configured or dvc_dir / "cache") / "files" / "md5"


def _object(cache: Path, md5: str) -> Path:
    return cache / md5[:2] / md5[2:]


def cache_problem(cache: Path | None, md5: str) -> str | None:
    """None when the cache can restore this md5, else what is missing."""
    if cache is None:
        return "no DVC cache here (not a DVC project)"
    manifest = _object(cache, md5)
    if not manifest.exists():
        return "not in the DVC cache"
    if md5.endswith(".dir"):
        entries = json.loads(manifest.read_text())
        missing = [e["relpath"] for e in entries if not _object(cache, e["md5"]).exists()]
        if missing:
            return f"{len(missing)} of {len(entries)} files not in the DVC cache (e.g. {missing[0]})"
    return None


def workspace_problem(root: Path, path: str, md5: str) -> str | None:
    """An output DVC does not cache: the workspace copy is the only one, so it must have the recorded md5 (hashed by
    DVC's own function, so the figure is the one dvc.lock records)."""
    from dvc_data.hashfile.hash import file_md5

    target = root / path
    if md5.endswith(".dir"):
        return None if target.is_dir() else "not cached and missing from the workspace"
    if not target.is_file():
        return "not cached and missing from the workspace"
    found = file_md5(str(target))
    return None if found == md5 else f"not cached; the workspace file has md5 {found}"


def check_workspace(recorded: dict[str, str], registering_stage: str | None, root: Path = Path(".")) -> dict:
    """Each recorded output against the workspace's dvc.lock and cache. `ok` is False when any differs or is missing."""
    declared, locked = declared_outputs(root / "dvc.yaml"), locked_outputs(root / "dvc.lock")
    cache = cache_dir(root)
    rows, left_out = [], []
    for path, md5 in sorted(recorded.items()):
        spec = declared.get(path, {"stage": None, "cache": True})
        if registering_stage and spec["stage"] == registering_stage:
            left_out.append(path)
            continue
        row = {"path": path, "stage": spec["stage"], "version": md5, "dvc_lock": locked.get(path),
               "cached": spec["cache"]}
        if row["dvc_lock"] is None:
            row["problem"] = "not in this workspace's dvc.lock"
        elif row["dvc_lock"] != md5:
            row["problem"] = f"dvc.lock has {row['dvc_lock']}"
        else:
            problem = cache_problem(cache, md5) if spec["cache"] else workspace_problem(root, path, md5)
            row |= {"problem": problem} if problem else {}
        rows.append(row)
    extra = sorted(p for p in locked if p not in recorded and declared.get(p, {}).get("stage") != registering_stage)
    return {"ok": not any("problem" in r for r in rows), "cache_dir": str(cache) if cache else None,
            "lock": str(root / "dvc.lock"), "outputs": rows, "not_compared": left_out, "not_in_version": extra}
