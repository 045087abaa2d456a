"""`make serve`: a registered model version behind vLLM's OpenAI-compatible server, until Ctrl-C or SIGTERM.

    python -m tasks.serve.serve_registry [--alias champion | --version N] [--port P] [--params params.yaml]

Resolves `models:/<tracking.registered_model>@champion` (or another alias, or a version) in the MLflow registry,
fetches that version's files once into .cache/champion/vN (a version's files never change), and starts vLLM from the
serving env on `deploy.host` (127.0.0.1 unless params say otherwise), health-checked, with the registered model's
name as the served model name. A stop signal stops vLLM's whole process group before this exits. Following the
alias while serving (a hot swap when `@champion` moves) is not built yet: restart it after a promotion.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading

from tasks import tracking
from tasks.common.vllm_server import ServerError, VLLMServer
from tasks.config import Paths, apply_runtime_env, load_config


def resolve(name: str, alias: str, version: int | None) -> dict | None:
    """{version, source} of `version`, or of the version `alias` points at; None when there is none."""
    if version is None:
        return tracking.champion(name, alias)
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        found = MlflowClient().get_model_version(name, str(version))
    except MlflowException:
        return None
    return {"version": int(found.version), "source": found.source}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--version", type=int)
    parser.add_argument("--port", type=int, help="default: deploy.port (0 = a free port)")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    cfg = load_config(args.params)
    apply_runtime_env(cfg)
    tracking.configure(cfg.tracking)
    name = cfg.tracking.registered_model
    wanted = f"version {args.version}" if args.version is not None else f"@{args.alias}"
    found = resolve(name, args.alias, args.version)
    if found is None:
        print(f"no {wanted} of {name!r} in the registry at {cfg.tracking.tracking_uri}: run `make pipeline` first, "
              "or pick one with --alias / --version", file=sys.stderr)
        return 2
    model_dir = tracking.fetch_model(found["source"], Paths.champion_cache / f"v{found['version']}")
    deploy = cfg.deploy.model_copy(update={} if args.port is None else {"port": args.port})
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):   # set before the start, so a signal during it still stops vLLM
        signal.signal(sig, lambda *_: stop.set())
    server = None
    try:
        server = VLLMServer(deploy, model_dir, served_name=name)   # refuses a missing serving env or a taken port
        server.start()
        print(f"serving {name} version {found['version']} ({wanted}) at {server.base_url}/v1 as model {name!r}\n"
              f"  curl {server.base_url}/v1/chat/completions -H 'Content-Type: application/json' -d "
              f"'{{\"model\": \"{name}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello!\"}}]}}'\n"
              "Ctrl-C stops it.", flush=True)
        while not stop.wait(1):
            if server.proc.poll() is not None:
                print(f"vLLM exited with code {server.proc.returncode}:\n{server.log_tail()}", file=sys.stderr)
                return 1
    except ServerError as err:
        print(err, file=sys.stderr)
        return 1
    finally:
        if server:
            server.stop()
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
