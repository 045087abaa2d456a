"""Where per-chunk work runs: in this process, in worker processes on this machine, or on a Dask cluster.

One small interface, `map(fn, items, **shared)`, results in order, so the cleaning code is the same on a laptop and
on a cluster. `shared` holds the read-only inputs every task of a step needs (the config, the rows dropped so far):
Dask ships them to each worker once (scatter, broadcast); local processes get them with each task, which is cheap
next to the work. Larger results pass between steps through the scratch folder (tasks/data/scratch.py). A task may
run twice (Dask reruns a lost worker's tasks elsewhere): every task writes its results atomically and the same each
time. Local workers come from a forkserver, not fork, because the stage runs inside processes that hold
threads (MLflow, Prefect) and forking those can deadlock. Workers die with the stage: local ones by the kernel's
parent-death signal (tasks/common/processes.py), Dask's by its nanny's parent-alive pipe.
"""
from __future__ import annotations

import functools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

from tasks.common.processes import die_with_parent
from tasks.config import ExecutorConfig


class _Inline:
    def map(self, fn: Callable, items: Iterable, **shared) -> Iterator:
        return (fn(item, **shared) for item in items)


class _Processes:
    def __init__(self, workers: int):
        context = multiprocessing.get_context("forkserver")
        os.environ["TASKS_FORKSERVER_PARENT"] = str(os.getpid())   # read by the preload: tasks/common/die_with_parent
        context.set_forkserver_preload(["tasks.common.die_with_parent", "tasks.data.clean"])
        self.pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_die_with_forkserver)

    def map(self, fn: Callable, items: Iterable, **shared) -> Iterator:
        return self.pool.map(functools.partial(fn, **shared), items)


def _die_with_forkserver() -> None:
    """A local worker's initializer: it was forked by the forkserver, which imported the preload that names it."""
    from tasks.common import die_with_parent as preload  # already imported here: no side effect

    die_with_parent(parent=preload.FORKSERVER)


class _Dask:
    def __init__(self, client):
        self.client = client

    def map(self, fn: Callable, items: Iterable, **shared) -> Iterator:
        # hash=False: a fresh key per call. With content keys the config scattered again by the next pass shares
        # its key with this pass's copy, and releasing one cancels the other's tasks ("lost dependencies").
        # In a list: scatter splits a list, set or dict into one future per element; each value is one object here.
        shared = {k: self.client.scatter([v], broadcast=True, hash=False)[0] for k, v in shared.items()}
        futures = self.client.map(fn, list(items), pure=False, **shared)
        for future in futures:          # in order, each as soon as it is done: the driver streams the results
            yield future.result()
            future.release()


@contextmanager
def open_executor(cfg: ExecutorConfig):
    """`local` with one worker runs inline (easy to debug); `dask` with no address starts a LocalCluster of
    `workers` processes on 127.0.0.1, or joins the scheduler at `address`."""
    if cfg.kind == "local" and cfg.workers == 1:
        yield _Inline()
    elif cfg.kind == "local":
        runner = _Processes(cfg.workers)
        try:
            yield runner
        finally:
            runner.pool.shutdown(cancel_futures=True)
    else:
        from distributed import Client, LocalCluster
        if cfg.address:
            with Client(cfg.address) as client:
                yield _Dask(client)
        else:
            with LocalCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                              dashboard_address=None) as cluster, Client(cluster) as client:
                yield _Dask(client)
