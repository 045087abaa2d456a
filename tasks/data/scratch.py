"""Where the clean stage's workers leave their intermediate results for each other: an fsspec folder.

The driver never holds a per-row table. Each step's tasks write what the next step needs here (fingerprints by
partition, LSH band keys by partition, candidates' shingle sets, held-out texts, the decontamination index), and the
next step's tasks read it back; only what is proportional to the duplicates found travels through the driver. A local
folder serves one machine; a URL every worker can reach (s3://, gs://, a shared mount) serves a cluster.

Writes go to a temp name renamed into place, so a task that dies mid-write (a killed worker) leaves nothing a rerun of
that task could mistake for its result. Objects are pickles: the folder is this run's own, read only by its workers.
"""
from __future__ import annotations

import os
import pickle
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tasks.common.jsonl import atomic_writer, open_binary
from tasks.common.processes import process_started


class Scratch:
    """One run's folder under `root` (a path or an fsspec URL), named by the driver's pid; `remove` deletes it. On a
    local root, the folders of drivers that died without removing theirs (kill -9) are removed first."""

    def __init__(self, root: str):
        self.fs, base = fsspec.core.url_to_fs(root)
        name = f"clean-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.url, self.path = f"{root.rstrip('/')}/{name}", f"{base.rstrip('/')}/{name}"
        if isinstance(self.fs, LocalFileSystem):
            for old in Path(base).glob("clean-*-*"):
                pid = old.name.split("-")[1]
                if pid.isdigit() and process_started(int(pid)) is None:
                    shutil.rmtree(old, ignore_errors=True)
        self.fs.makedirs(self.path, exist_ok=True)

    def remove(self) -> None:
        if self.fs.exists(self.path):
            self.fs.rm(self.path, recursive=True)


def put(url: str, obj) -> None:
    """Pickle `obj` to `url`, atomically (the stage's own atomic_writer, which takes URLs)."""
    with atomic_writer(url, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def get(url: str):
    with open_binary(url) as f:
        return pickle.load(f)


_RECENT = 32                 # results kept per worker process
_lock, _cache = threading.Lock(), {"run": "", "recent": OrderedDict()}


def get_cached(work: str, name: str):
    """`get` of `{work}/{name}`, the last _RECENT remembered in this worker process: the verification tasks of one run
    read the same ranges' shingle sets, and every finish task the same decontamination index. Only the current run's:
    a long-lived Dask worker does not hold an earlier run's index."""
    with _lock:
        if _cache["run"] != work:
            _cache["run"], _cache["recent"] = work, OrderedDict()
        recent = _cache["recent"]
        if name in recent:
            recent.move_to_end(name)
        else:
            recent[name] = get(f"{work}/{name}")
            if len(recent) > _RECENT:
                recent.popitem(last=False)
        return recent[name]


def reachable(src: str, scratch: Scratch) -> str:
    """`src` where the workers can read it: itself, unless it is on the driver's disk and the scratch folder is not
    (a remote cluster cannot read the driver's disk): then a copy in the scratch folder, streamed."""
    if not isinstance(fsspec.core.url_to_fs(src)[0], LocalFileSystem) or isinstance(scratch.fs, LocalFileSystem):
        return src
    dest = f"{scratch.url}/input.jsonl"
    with fsspec.open(src, "rb") as f_in, fsspec.open(dest, "wb") as f_out:
        while block := f_in.read(1 << 24):
            f_out.write(block)
    return dest
