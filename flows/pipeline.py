"""Flow `recfound`: the DVC pipeline under Prefect, one retried task per stage.

Each task runs `dvc repro <stage>` in the repository the serving process runs in, so there
is one definition of every stage (dvc.yaml's `cmd`, i.e. `recfound stage <name>`), and DVC's
lock, cache and dvc.lock stay the truth: a stage whose inputs did not change is skipped, a
failed stage leaves no half-written output and no lock entry, and a retry simply runs
`dvc repro <stage>` again. The stage's output is streamed line by line into the Prefect log.

The flow-run id goes to the stages through RECFOUND_PIPELINE_ID / RECFOUND_PREFECT_FLOW_RUN_ID,
so every MLflow stage run of this execution carries it (recfound.tracking.mlflow_run).
The whole run holds one slot of the global concurrency limit `orchestration.workspace_limit`:
two pipelines in one working tree would fight over DVC's lock and outputs.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.concurrency.sync import concurrency
from prefect.runtime import flow_run

from recfound.config import load_config
from recfound.tracking import git_dvc, tags

PARAMS_FILE = "params.yaml"


class CommandFailed(RuntimeError):
    """A command the flow ran exited non-zero (its output is in the flow's log above)."""


def run_logged(cmd: list[str], env: Mapping[str, str] | None = None) -> None:
    """Run `cmd` in the working directory, each output line going to the Prefect logger.

    Raises CommandFailed on a non-zero exit; if the task itself is interrupted (cancellation,
    Ctrl-C), the child is terminated rather than left running.
    """
    logger = get_run_logger()
    logger.info("$ %s", " ".join(cmd))
    # stderr joins stdout so that errors and progress appear in order in one log
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                logger.info(line.rstrip())
        code = proc.wait()
    except BaseException:
        proc.terminate()
        proc.wait()
        raise
    if code != 0:
        raise CommandFailed(f"`{' '.join(cmd)}` exited with status {code}")


def stage_env(pipeline_id: str, progress_interval_s: float) -> dict[str, str]:
    """Environment of a stage command: the ids MLflow tags it with, unbuffered output."""
    return {
        **os.environ,
        tags.PIPELINE_ID_ENV: pipeline_id,
        tags.FLOW_RUN_ID_ENV: pipeline_id,
        "PYTHONUNBUFFERED": "1",  # lines reach the log as they are printed
        # tqdm reads its defaults from TQDM_* variables: fewer progress lines in the log
        "TQDM_MININTERVAL": str(progress_interval_s),
    }


@task(task_run_name="dvc repro {stage}")
def repro_stage(stage: str, pipeline_id: str, progress_interval_s: float) -> str:
    """`dvc repro <stage>`: runs the stage (and any stale upstream stage) or skips it."""
    run_logged(["dvc", "repro", stage], stage_env(pipeline_id, progress_interval_s))
    return stage


def check_workspace(stages: list[str]) -> None:
    """Fail early, with the reason, when the working directory is not the pipeline's repo."""
    known = git_dvc.read_stages(".")
    if not known:
        raise FileNotFoundError(f"no dvc.yaml with stages in {Path.cwd()}: serve from the repo")
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise ValueError(f"stages {unknown} are not in dvc.yaml (it has {', '.join(known)})")


@flow(name="recfound", log_prints=True)
def recfound(stages: list[str] | None = None) -> list[str]:
    """Run the pipeline's stages in order (default: orchestration.stages), each with retries."""
    cfg = load_config(PARAMS_FILE)
    stages = list(stages or cfg.orchestration.stages)
    check_workspace(stages)
    pipeline_id = str(flow_run.id)
    repro = repro_stage.with_options(
        retries=cfg.orchestration.retries, retry_delay_seconds=cfg.orchestration.retry_delay_s
    )
    # strict=False: without the limit (a local run outside `recfound serve`) nothing to wait on
    with concurrency(cfg.orchestration.workspace_limit, occupy=1, strict=False):
        return [
            repro(stage, pipeline_id, cfg.orchestration.progress_interval_s) for stage in stages
        ]


if __name__ == "__main__":
    recfound()
