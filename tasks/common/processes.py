"""Which process owns a run: enough to tell, later and from another process, that it died without ending it.

A pid alone can be reused, so a run also records its process's start time (field 22 of /proc/PID/stat, in clock
ticks since boot) and host; the owner is alive only if a process with that pid and that start time exists here.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


def _started(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]   # fields after "(comm)" start at field 3: starttime is field 22


def owner_tags() -> dict[str, str]:
    return {"process.pid": str(os.getpid()), "process.host": socket.gethostname(),
            "process.started": _started(os.getpid()) or ""}


def owner_died(tags: dict[str, str]) -> bool:
    """True when `tags` (owner_tags of some run) name a process on this host that no longer exists; False when it
    lives, or when the run was made elsewhere or before runs recorded their owner (nothing to judge by)."""
    if tags.get("process.host") != socket.gethostname() or not tags.get("process.pid"):
        return False
    return _started(int(tags["process.pid"])) != tags.get("process.started")
