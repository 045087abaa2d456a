"""`python reaper.py PARENT_PID [--cpus 1,3] -- COMMAND...`: run COMMAND in this process group; take the group down
when PARENT dies. `--cpus`: the group runs on these CPU cores only (tasks/serve/swap.py says why).

VLLMServer starts vLLM in a session of its own, so that one signal stops its API server, engine core and workers
together. Without this wrapper, a pipeline killed with SIGKILL left all three serving, reparented to PID 1 (measured:
4.6 GB RSS, still answering /health after the re-run finished). The wrapper is the group's leader: it exits with
COMMAND's code, and when PARENT goes away it sends the group SIGTERM, then SIGKILL after a grace period (signalling
vLLM's API server alone was measured to leave it hanging). Standard library only: it runs under any Python.
"""
import os
import signal
import subprocess
import sys
import time

GRACE_S = 20


def main() -> int:
    parent, command = int(sys.argv[1]), sys.argv[sys.argv.index("--") + 1:]
    if sys.argv[2] == "--cpus":                      # before COMMAND starts, so its first instruction runs there
        os.sched_setaffinity(0, {int(cpu) for cpu in sys.argv[3].split(",")})
    signal.signal(signal.SIGTERM, lambda *_: None)   # a stop signals the whole group: wait for COMMAND to exit
    child = subprocess.Popen(command)
    while child.poll() is None:
        if os.getppid() != parent:                   # reparented: whoever started us is gone
            os.killpg(0, signal.SIGTERM)
            deadline = time.monotonic() + GRACE_S
            while child.poll() is None and time.monotonic() < deadline:
                time.sleep(0.5)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.killpg(0, signal.SIGKILL)             # the engine and workers too, then this process
        time.sleep(0.5)
    os.killpg(0, signal.SIGTERM)                     # COMMAND died alone (killed): its engine and workers follow
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
