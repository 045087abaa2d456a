"""JSONL in and out. Writes go to a temp file renamed into place, so a crash never leaves half an output."""
from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tasks.common.processes import process_started


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def open_binary(url: str | Path):
    """A file by path or fsspec URL, for reading bytes; local files through the built-in open (fsspec's local
    wrapper reads lines 4x slower)."""
    fs, path = fsspec.core.url_to_fs(str(url))
    return open(path, "rb") if isinstance(fs, LocalFileSystem) else fs.open(path, "rb")


def byte_ranges(path: str | Path, chunk_bytes: int) -> list[tuple[int, int]]:
    """[start, end) byte ranges that cover the file (a path or an fsspec URL); a line belongs to the range its first
    byte falls in, so ranges can be read independently (by different processes or machines) without a pass to find
    line ends."""
    fs, local = fsspec.core.url_to_fs(str(path))
    size = fs.size(local)
    return [(start, min(start + chunk_bytes, size)) for start in range(0, size, chunk_bytes)]


def read_jsonl_range(path: str | Path, start: int, end: int) -> Iterator[dict]:
    """The rows of one byte range (byte_ranges) of a file given by path or fsspec URL."""
    with open_binary(path) as f:
        if start:
            f.seek(start - 1)
            f.readline()              # the line straddling `start` belongs to the previous range
        while f.tell() < end:
            line = f.readline()
            if not line:
                break
            if line.strip():
                yield json.loads(line)


TEMP_SUFFIX = ".tmp"


def temp_name(path: Path) -> Path:
    """A temp file beside `path`, unique to this writer (pid and a random part): two writers never share one, and
    `sweep_temp` can tell a dead writer's leftover from a live writer's file by the pid."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")


@contextmanager
def atomic_writer(path: str | Path, mode: str = "w"):
    """`open(path, mode)` whose content appears at `path` only when the block ends without an error; on an error the
    temp file is removed (a kill -9 leaves it to `sweep_temp` at the next start). `path` may be an fsspec URL."""
    fs, local = fsspec.core.url_to_fs(str(path))
    if not isinstance(fs, LocalFileSystem):
        tmp = f"{local}.{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            with fs.open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
                yield f
            fs.mv(tmp, local)
        finally:
            if fs.exists(tmp):
                fs.rm(tmp)
        return
    path = Path(local)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with open(tmp, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    n = 0
    with atomic_writer(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | Path, obj) -> None:
    with atomic_writer(path) as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


_TEMP = re.compile(rf"^\..+\.(\d+)-[0-9a-f]{{8}}{re.escape(TEMP_SUFFIX)}$")


def sweep_temp(root: str | Path) -> list[Path]:
    """Remove the temp files under `root` whose writer is dead (killed mid-write); returns them."""
    removed = []
    for tmp in Path(root).rglob(f".*{TEMP_SUFFIX}"):
        match = _TEMP.match(tmp.name)
        if match and process_started(int(match.group(1))) is None:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
