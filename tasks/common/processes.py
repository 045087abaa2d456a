"""Which process owns a run: enough to tell, later and from another process, that it died without ending it.

A pid alone can be reused, so a run also records its process's start time (field 22 of /proc/PID/stat, in clock
ticks since boot) and host; the owner is alive only if a process with that pid and that start time exists here.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path


def process_started(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]   # fields after "(comm)" start at field 3: starttime is field 22


def group_processes(pgid: int) -> dict[int, str]:
    """pid -> name (comm, which vLLM sets to e.g. "VLLM::Worker") of each process in process group `pgid`."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue                                 # it exited meanwhile
        if int(text.rsplit(")", 1)[1].split()[2]) == pgid:   # field 5, pgrp
            found[int(stat.parent.name)] = text[text.index("(") + 1:text.rindex(")")]
    return found


def owner_tags() -> dict[str, str]:
    return {"process.pid": str(os.getpid()), "process.host": socket.gethostname(),
            "process.started": process_started(os.getpid()) or ""}


def owner_died(tags: dict[str, str]) -> bool:
    """True when `tags` (owner_tags of some run) name a process on this host that no longer exists; False when it
    lives, or when the run was made elsewhere or before runs recorded their owner (nothing to judge by)."""
    if tags.get("process.host") != socket.gethostname() or not tags.get("process.pid"):
        return False
    return process_started(int(tags["process.pid"])) != tags.get("process.started")


def reap_stale_groups(pid_dir: Path) -> list[int]:
    """Process groups recorded in `pid_dir/*.pid` (owner_tags + "pgid", one JSON each) whose owner died: killed, and
    their files removed. The reaper (tasks/common/reaper.py) normally takes a server down with its owner; this covers
    the reaper itself being killed (an OOM kill, `kill -9` of its pid). Returns the groups it killed."""
    killed = []
    for path in pid_dir.glob("*.pid"):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not owner_died(record):
            continue
        pgid = int(record["pgid"])
        # a living leader must be the one recorded (not a reused pid); a dead one may leave members (vLLM's engine)
        if process_started(pgid) in (None, record.get("pgid_started")):
            try:
                os.killpg(pgid, signal.SIGKILL)
                killed.append(pgid)
            except ProcessLookupError:
                pass
        path.unlink(missing_ok=True)
    return killed


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux prctl PR_SET_PDEATHSIG); elsewhere a no-op.
    For worker processes (tasks/data/executor.py), which would otherwise outlive a killed stage, each holding a
    model and its chunk (measured: ~735 MB reparented to PID 1 after a kill -9 of clean). `parent`: the pid the
    caller knows its parent had, so that one that died before the call (nobody would signal us) is caught too."""
    import ctypes

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid() if parent is None else parent
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)    # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def exit_on_sigterm() -> None:
    """SIGTERM (a scheduler's stop, `kill`) raises SystemExit in the main thread: `finally` blocks then run, so temp
    files go, the workspace lock is released and the MLflow run is marked FAILED instead of left RUNNING."""
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
