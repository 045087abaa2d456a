"""Clean on a real Dask cluster, started the way a team starts one: `dask scheduler` and `dask worker` processes from
their own CLI, on 127.0.0.1, inputs and outputs by fsspec URL. One worker is SIGKILLed mid-run: its tasks run again
elsewhere (the tasks' results in the scratch folder are written atomically, so a rerun finds nothing half-written),
and the output, the audit and the counts are those of the in-process run."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tasks.common.vllm_server import free_port
from tests.data.test_clean import INLINE, run_clean

WORKERS = 3
SMALL_CHUNKS = {"chunk_mb": 0.25, "partitions": 8}

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path):
    """A scheduler and WORKERS one-thread workers (each under its nanny), as separate processes; torn down after."""
    from distributed import Client

    port, env = free_port("127.0.0.1"), {**os.environ, "PYTHONPATH": str(ROOT)}
    dask = [str(Path(sys.executable).parent / "dask")]              # the CLI a team runs, from this environment
    logs = open(tmp_path / "cluster.log", "w")
    procs = [subprocess.Popen([*dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                              cwd=ROOT, env=env, stdout=logs, stderr=logs)]
    address = f"tcp://127.0.0.1:{port}"
    procs += [subprocess.Popen([*dask, "worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-dashboard",
                                "--name", f"w{i}", "--local-directory", str(tmp_path / f"w{i}")],
                               cwd=ROOT, env=env, stdout=logs, stderr=logs) for i in range(WORKERS)]
    try:
        with Client(address, timeout=60) as client:
            client.wait_for_workers(WORKERS, timeout=120)
            yield address, client
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()


def test_clean_on_a_cluster_matches_the_local_run_and_survives_a_killed_worker(tmp_path, sharegpt_sample, cluster):
    address, client = cluster
    local = run_clean(tmp_path / "local", sharegpt_sample, executor={**INLINE["executor"], **SMALL_CHUNKS})
    scratch = tmp_path / "scratch"
    pids = client.run(os.getpid)                                  # worker address -> its process
    killed = {}

    def kill_one_worker_mid_scan():
        """Once a few scans are done and more are running: SIGKILL a worker that is running one."""
        while not killed:
            if len(list(scratch.glob("clean-*/kept/[0-9]*"))) >= 3:
                busy = [addr for addr, tasks in client.processing().items() if tasks]
                if busy:
                    os.kill(pids[busy[0]], signal.SIGKILL)
                    killed[busy[0]] = pids[busy[0]]
            time.sleep(0.01)

    threading.Thread(target=kill_one_worker_mid_scan, daemon=True).start()
    out = tmp_path / "cluster"
    out.mkdir()
    counts = _clean_by_url(sharegpt_sample, out, scratch, address)

    assert killed, "no worker was killed: the run ended before three scans were done"
    assert f"Worker process {next(iter(killed.values()))} was killed by signal 9" in \
        (tmp_path / "cluster.log").read_text()                # its nanny saw it die (and started a fresh one)
    assert (out / "out.jsonl").read_bytes() == (tmp_path / "local/out.jsonl").read_bytes()
    assert [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()] == local[2]
    costs = ("executor", "seconds", "cpu_seconds", "processes")
    assert {k: v for k, v in counts.items() if k not in costs} == {k: v for k, v in local[0].items() if k not in costs}
    assert counts["rows_in"] == counts["rows_kept"] + counts["rows_dropped"]
    workers = [name for name in counts["processes"] if name.startswith("worker")]
    assert len(workers) >= WORKERS - 1          # the tasks were spread over the cluster's processes
    assert not list(scratch.glob("clean-*")), "the run's scratch folder was left behind"


def _clean_by_url(src: Path, out: Path, scratch: Path, address: str) -> dict:
    from tasks.data.clean import clean
    from tests.conftest import configured

    cfg = configured("clean", executor={"kind": "dask", "workers": WORKERS, "address": address,
                                        "scratch": f"file://{scratch}", **SMALL_CHUNKS})
    return clean(cfg, f"file://{src}", f"file://{out}/out.jsonl", f"file://{out}/audit.jsonl", out / "r.json",
                 out / "r.md", out / "plots", held_out_fraction=configured("datasets").test_fraction)
