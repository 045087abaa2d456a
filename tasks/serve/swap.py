"""Blue/green on one machine: a registered version starts beside the one serving, traffic moves once it is healthy,
and the old one is stopped only after its last request has finished. A version that fails to start never gets
traffic: the old one keeps serving, and the error (with vLLM's log tail) says why.

LoRA versions (`vllm.mode: lora`) on the base already being served need no second server: the new adapter is
loaded into the running one (`/v1/load_lora_adapter`, ~0.02 s), traffic moves to it by name, and the old adapter is
unloaded once drained.

On a CPU host the two servers take turns on two halves of the cores (`cpu_slot`). vLLM pins its worker's OpenMP
threads, by default to the same core in every server: measured on a 2-core EPYC, a second server's worker started
beside a loaded first one got no CPU at all and was not healthy after 300 s; bound to the other core it was healthy
in 62 s while the first answered 262 requests meanwhile. Servers start their engine processes with `spawn`
(`VLLM_WORKER_MULTIPROC_METHOD` in vllm.env): with vLLM's default `fork`, a second server started beside a loaded
one stalled before its EngineCore printed a line, in 1 of 4 swap tests last time and 2 of 2 attempts once (a fork
of a process whose threads hold locks); with spawn the same test passed at once (185 s instead of failing at 792 s).

A server started beside a running one starts with every process on its half (`VLLMServer.cpus`), and its API server
and engine core go back to every core once the old one is stopped (`spread`). Why: torch's import (MKL's core count in
`at::init_num_threads`) pins the importing thread to each allowed core in turn; on the core where the old server's
worker was busy, the new process sat runnable with no CPU for 300 s (2-core EPYC, kernel 6.18: the API server stopped
after 0.33 s of CPU, or the engine core did, in 2 of 2 tries and in CI). strace showed the pins.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from tasks import tracking
from tasks.common.adapter_folder import AdapterError, base_of, is_adapter_folder
from tasks.common.hardware import has_cuda_gpu
from tasks.common.processes import group_processes
from tasks.common.vllm_server import ServerError, VLLMServer
from tasks.config import VllmConfig
from tasks.paths import Paths
from tasks.serve.proxy import Backend, Proxy

CPU_BIND = "VLLM_CPU_OMP_THREADS_BIND"
WORKER = "VLLM::Worker"     # the name vLLM gives its worker processes, whose OpenMP threads it binds itself


def slot_cores(vllm: VllmConfig, slot: int) -> tuple[int, ...]:
    """Half `slot` (0 or 1) of this process's cores; () on a GPU host, on one core, or where vllm.env already
    chooses the binding."""
    cores = sorted(os.sched_getaffinity(0))
    if has_cuda_gpu() or len(cores) < 2 or CPU_BIND in vllm.env:
        return ()
    return tuple(cores[:len(cores) // 2] if slot == 0 else cores[len(cores) // 2:])


def cpu_slot(vllm: VllmConfig, slot: int) -> VllmConfig:
    """`vllm` with vLLM's worker threads on half `slot` of the cores (unchanged where slot_cores is ())."""
    half = slot_cores(vllm, slot)
    return vllm.model_copy(update={"env": {**vllm.env, CPU_BIND: ",".join(map(str, half))}}) if half else vllm


def spread(server: VLLMServer) -> None:
    """`server`'s processes, except its workers (vLLM bound them), back on every core this process may use."""
    cores = os.sched_getaffinity(0)
    for pid, name in group_processes(server.proc.pid).items():
        if name.startswith(WORKER):
            continue
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                os.sched_setaffinity(int(task.name), cores)
            except OSError:
                pass                                 # a thread that exited meanwhile


def fetched(found: dict) -> Path:
    """`found`'s ({version, source}) files, fetched once into the version cache."""
    return tracking.fetch_model(found["source"], Paths.champion_cache / f"v{found['version']}")


def start_backend(found: dict, served_name: str, vllm: VllmConfig, slot: int = 0, beside: bool = False) -> Backend:
    """`found` healthy behind a new vLLM server on a free port; `beside` a running one: on its half of the cores."""
    server = VLLMServer(cpu_slot(vllm, slot).model_copy(update={"port": 0}), fetched(found), served_name=served_name,
                        cpus=slot_cores(vllm, slot) if beside else ()).start()
    return Backend(url=server.base_url, version=found["version"], server=server, slot=slot)


def load_beside(old: Backend, found: dict, served_name: str) -> Backend | None:
    """`found` as one more adapter on `old`'s server when both are LoRA adapters on the same base; else None."""
    folder = fetched(found)
    if old.server.base is None or not is_adapter_folder(folder):
        return None
    try:
        if base_of(folder).resolve() != old.server.base.resolve():
            return None
    except AdapterError as err:
        raise ServerError(str(err)) from err
    name = f"{served_name}-v{found['version']}"
    old.server.load_adapter(name, folder)
    return Backend(url=old.url, version=found["version"], server=old.server, slot=old.slot,
                   renamed={served_name: name})


def swap(proxy: Proxy, found: dict, served_name: str, vllm: VllmConfig, drain_timeout_s: float,
         say=print, started: Backend | None = None) -> Backend:
    """Serve `found` instead of the proxy's current backend, without failing a request; returns the new backend.
    `started`: `found` already serving beside (the A/B challenger being promoted). Raises ServerError (the old
    version still serving) when the new one does not come up."""
    t0 = time.monotonic()
    old = proxy.current
    new = started or (load_beside(old, found, served_name) if old else None)
    if new is None:
        say(f"starting version {found['version']}" + (f" beside version {old.version}" if old else ""), flush=True)
        new = start_backend(found, served_name, vllm, slot=1 - old.slot if old else 0, beside=old is not None)
    proxy.switch(new)
    how = "loaded as a LoRA adapter on the running server" if old and new.server is old.server else "healthy"
    say(f"version {found['version']} {how} after {time.monotonic() - t0:.1f} s: new requests go to it", flush=True)
    if old is not None:
        in_flight = old.in_flight
        drained = proxy.drain(old, drain_timeout_s)
        if new.server is old.server:
            old.server.unload_adapter(old.renamed.get(served_name, served_name))
        else:
            old.server.stop()
            if new.server.cpus:
                spread(new.server)
        done = "unloaded" if new.server is old.server else "stopped"
        say(f"version {old.version} {done} after finishing its {in_flight} request(s) in flight" if drained else
            f"version {old.version} {done} with {old.in_flight} request(s) still running after "
            f"serve.drain_timeout_s={drain_timeout_s:.0f} s", flush=True)
    return new


def retire(proxy: Proxy, backend: Backend, served_name: str, drain_timeout_s: float) -> None:
    """Stop comparing with `backend` (the A/B challenger): no new requests, then its adapter unloaded or its server
    stopped once its requests are done."""
    proxy.challenger = None
    proxy.drain(backend, drain_timeout_s)
    if proxy.current and backend.server is proxy.current.server:
        backend.server.unload_adapter(backend.renamed.get(served_name, served_name))
    else:
        backend.server.stop()


def follow_challenger(proxy: Proxy, found: dict | None, served_name: str, vllm: VllmConfig, drain_timeout_s: float,
                      say=print) -> None:
    """Keep serve.compare's second version on `found` (@challenger, None when there is none or it is the champion):
    beside the champion, as an adapter on its server or on the other half of the cores."""
    have = proxy.challenger
    if (found and have and found["version"] == have.version) or (found is None and have is None):
        return
    if have:
        say(f"no longer comparing with version {have.version}", flush=True)
        retire(proxy, have, served_name, drain_timeout_s)
    if found:
        current = proxy.current
        proxy.challenger = load_beside(current, found, served_name) or start_backend(
            found, served_name, vllm, slot=1 - current.slot, beside=True)
        say(f"comparing version {current.version} with @challenger version {found['version']} (serve.compare)",
            flush=True)
