"""The whole pipeline as a Prefect flow: `python -m tasks pipeline` (ephemeral Prefect, no server needed).

Each stage is one Prefect task around the same runner `dvc repro` uses. DVC stays the judge of what is stale: a stage
whose deps, params and outs match dvc.lock is skipped, and each finished stage is committed to dvc.lock, so a failed
run resumes where it stopped and a following `dvc repro` has nothing to do. A finished run pushes the scrubbed outputs
to the DVC remote (`--no-push` keeps them here). `--until STAGE` stops after that stage.
Scheduled runs are the deployment in prefect.yaml, run by a worker (`make deploy`, `make worker`).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

# the ephemeral server's default 20 s start budget runs out on a loaded 2-core CPU; read when prefect is imported
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402
from prefect.cache_policies import NO_CACHE  # noqa: E402

from tasks.common.processes import exit_on_sigterm  # noqa: E402
from tasks.common.workspace_lock import workspace_lock  # noqa: E402
from tasks.config import Config, apply_runtime_env, load_config  # noqa: E402

if TYPE_CHECKING:
    from tasks.stages import Stage


def _dvc_repo():
    from dvc.repo import Repo

    return Repo(".") if Path(".dvc").is_dir() else None


def up_to_date(repo, stage: str) -> bool:
    return repo is not None and Path("dvc.lock").exists() and not repo.status(targets=[stage])


def stages_until(until: str | None) -> list[Stage]:
    """The stages in order up to and including `until` (all of them for None): `--until clean` builds the data without
    training. Those before it still skip when DVC says they are up to date."""
    from tasks.stages import STAGES

    names = [s.name for s in STAGES]
    if until is None:
        return STAGES
    if until not in names:
        raise ValueError(f"until={until!r} is not a stage; the stages are {', '.join(names)}")
    return STAGES[:names.index(until) + 1]


def push_to_remote(log) -> None:
    """The finished run's scrubbed outputs to the DVC remote (tasks/ops/remote.py), for clones to `dvc pull`. A failed
    push is logged, not raised: the run's outputs are intact here and `make push` sends them later."""
    from tasks.ops.remote import push_outputs

    try:
        pushed = push_outputs()
    except Exception as e:  # noqa: BLE001 - any transport error: the run itself succeeded
        log.warning("dvc push failed, outputs kept here (`make push` retries): %s", e)
        return
    if pushed is None:
        log.info("no DVC remote in .dvc/config: nothing pushed")
    else:
        log.info("pushed %d files to the DVC remote %s (%s); not pushed (raw, PII): %s", pushed.files, pushed.remote,
                 pushed.url, ", ".join(pushed.not_pushed) or "nothing")


@task(cache_policy=NO_CACHE)
def run_stage_task(stage_name: str, cfg: Config, parent_id: str) -> dict:
    from tasks.stages import BY_NAME, run_stage

    return run_stage(cfg, BY_NAME[stage_name], parent_id)


def cut_feedback_round(cfg, log) -> None:
    """With a feedback source, the feedback `make serve` recorded becomes this run's round once there is
    flywheel.min_new_rows of it (tasks/data/feedback.py); its rounds folder is then what ingest sees changed."""
    if any(source.kind == "feedback" for source in cfg.ingest.sources):
        from tasks.data.feedback import cut, pending

        folder = cut(cfg.flywheel.min_new_rows)
        log.info("feedback round %s", f"closed: {folder}" if folder else
                 f"not due: {pending().total()} of flywheel.min_new_rows {cfg.flywheel.min_new_rows} rows")


@flow(name="finetune-pipeline")
def finetune_pipeline(params_file: str = "params.yaml", force: bool = False, until: str | None = None,
                      push: bool = True, wait_s: float = 0.0) -> dict:
    """Every stage DVC says is stale, in order, up to `until` (a stage name; None: all), as one MLflow pipeline run.
    The run holds the workspace throughout (tasks/common/workspace_lock.py): another run started meanwhile is refused,
    or waits `wait_s` seconds for it."""
    cfg = load_config(params_file)   # read once: editing params.yaml mid-run does not change this run
    apply_runtime_env(cfg)
    stages = stages_until(until)     # a misspelt stage fails before anything runs
    from tasks import tracking
    from tasks.common.vllm_server import kept_servers
    from tasks.stages import carry_headline

    log = get_run_logger()
    results = {}
    # one vLLM start per model per flow run: evaluate scores on the server smoke_test started
    with workspace_lock("python -m tasks pipeline", wait_s=wait_s), \
            tracking.pipeline_run(cfg, "prefect", Path(params_file)) as parent, kept_servers():
        cut_feedback_round(cfg, log)
        repo = _dvc_repo()
        for stage in stages:
            if not force and up_to_date(repo, stage.name):
                log.info("%s: up to date (dvc.lock), skipped", stage.name)
                carry_headline(stage, parent)
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
    if push and repo is not None:
        push_to_remote(log)
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--force", action="store_true", help="run every stage even if DVC says it is up to date")
    parser.add_argument("--until", metavar="STAGE", help="stop after this stage, e.g. clean (default: run them all)")
    parser.add_argument("--no-push", action="store_true", help="keep the outputs here: no `dvc push` after the run")
    parser.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                        help="when another run holds this workspace, wait this long for it (default: refuse at once)")
    args = parser.parse_args(argv)
    apply_runtime_env(load_config(args.params))
    exit_on_sigterm()
    # taken here too (the flow's own is re-entrant): a busy workspace is then one line, not a failed flow run
    with workspace_lock("python -m tasks pipeline", wait_s=args.wait):
        finetune_pipeline(args.params, args.force, args.until, push=not args.no_push)
    return 0
