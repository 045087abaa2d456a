"""The whole pipeline as a Prefect flow: `python -m flows.pipeline` (ephemeral Prefect, no server needed).

Each stage is one Prefect task around the same runner `dvc repro` uses. DVC stays the judge of what is stale: a stage
whose deps, params and outs match dvc.lock is skipped, and each finished stage is committed to dvc.lock, so a failed
run resumes where it stopped and a following `dvc repro` has nothing to do. `--serve` keeps the process up and runs
the flow on a cron schedule.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

# the ephemeral server's default 20 s start budget runs out on a loaded 2-core CPU; read when prefect is imported
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from tasks.config import Config, apply_runtime_env, load_config  # noqa: E402


def _dvc_repo():
    from dvc.repo import Repo

    return Repo(".") if Path(".dvc").is_dir() else None


def up_to_date(repo, stage: str) -> bool:
    return repo is not None and Path("dvc.lock").exists() and not repo.status(targets=[stage])


@task(cache_policy=NO_CACHE)
def run_stage_task(stage_name: str, cfg: Config, parent_id: str) -> dict:
    from tasks.stages import BY_NAME, run_stage

    return run_stage(cfg, BY_NAME[stage_name], parent_id)


@flow(name="finetune-pipeline")
def finetune_pipeline(params_file: str = "params.yaml", force: bool = False) -> dict:
    cfg = load_config(params_file)   # read once: editing params.yaml mid-run does not change this run
    apply_runtime_env(cfg)
    from tasks import tracking
    from tasks.common.vllm_server import kept_servers
    from tasks.stages import STAGES

    log = get_run_logger()
    repo, parent, results = _dvc_repo(), tracking.start_pipeline(cfg, launcher="prefect"), {}
    try:
        with kept_servers():   # one vLLM start per model per flow run: evaluate scores on the server deploy started
            for stage in STAGES:
                if not force and up_to_date(repo, stage.name):
                    log.info("%s: up to date (dvc.lock), skipped", stage.name)
                    continue
                task_run = run_stage_task.with_options(name=stage.name, retries=stage.retries, retry_delay_seconds=5)
                results[stage.name] = task_run(stage.name, cfg, parent)
                if repo is not None:
                    repo.commit(stage.name, force=True)
                if stage.report and stage.report.exists():
                    text = stage.report.read_text()
                    create_markdown_artifact(text, key=f"{stage.name.replace('_', '-')}-report",
                                             description=f"{stage.name} report ({stage.report})")
                    log.info("%s report (%s):\n%s", stage.name, stage.report, text)
    except BaseException:
        tracking.end_pipeline(parent, "FAILED")
        raise
    tracking.end_pipeline(parent)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--force", action="store_true", help="run every stage even if DVC says it is up to date")
    parser.add_argument("--serve", metavar="CRON", help="stay up and run on this cron schedule, e.g. '0 3 * * *'")
    args = parser.parse_args()
    apply_runtime_env(load_config(args.params))
    if args.serve:
        finetune_pipeline.serve(name="scheduled", cron=args.serve,
                                parameters={"params_file": args.params, "force": args.force})
    else:
        finetune_pipeline(args.params, args.force)


if __name__ == "__main__":
    main()
