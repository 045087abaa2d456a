"""One writer per workspace: every stage, and the flow around them, hold `.workspace.lock` while they write.

Two runs in one folder (a scheduled flow and a hand-started `dvc repro`, two Prefect workers on one workspace) used to
interleave their writes: a clean output mixing both runs' scrubbing, lines cut in half. The lock is an flock on a file
in the workspace root, so the kernel frees it when its holder dies, however it dies (kill -9 included): a dead
holder's lock is simply taken over, and its temp files swept. The file records the holder (pid, host, process start
time, what it runs, since when) so that a refused writer says who is in the way. Re-entrant within a process: the flow
holds it and each stage it runs takes it again.
"""
from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.common.errors import UserError
from tasks.common.jsonl import sweep_temp
from tasks.common.processes import owner_tags

LOCK_FILE = ".workspace.lock"
_held: dict[Path, int] = {}      # lock path -> how many holders in this process


class WorkspaceBusy(UserError):
    """Another process holds the workspace; the message says which."""


@contextmanager
def workspace_lock(purpose: str, root: str | Path = ".", wait_s: float = 0.0) -> Iterator[None]:
    """Hold the workspace at `root` for `purpose` (e.g. "python -m tasks run clean"). A second writer waits up to
    `wait_s` seconds, then raises WorkspaceBusy naming the holder. Taking the lock sweeps dead writers' temp files."""
    path = (Path(root) / LOCK_FILE).resolve()
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, wait_s)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**owner_tags(), "purpose": purpose,
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}).encode(), 0)
        sweep_temp(path.parent / "data")
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)             # closing the descriptor releases the flock


def _acquire(fd: int, path: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise WorkspaceBusy(f"{path.parent} is in use by {holder(path)}; wait for it (--wait SECONDS) or "
                                    "stop it") from None
            time.sleep(0.5)


def holder(path: Path) -> str:
    """Who holds the lock at `path`, in words, from what its holder wrote."""
    try:
        tags = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        tags = {}
    if not tags:
        return "another process (it has not written its name yet)"
    return (f"{tags.get('purpose', '?')} (pid {tags.get('process.pid', '?')} on {tags.get('process.host', '?')}, "
            f"since {tags.get('since', '?')})")
