"""Flow `recfound`: the DVC pipeline under Prefect, one retried task per stage.

Each task runs `dvc repro <stage>` in the repository the serving process runs in, so there
is one definition of every stage (dvc.yaml's `cmd`, i.e. `recfound stage <name>`), and DVC's
lock, cache and dvc.lock stay the truth: a stage whose inputs did not change is skipped, a
failed stage leaves no half-written output and no lock entry, and a retry simply runs
`dvc repro <stage>` again. The stage's output is streamed line by line into the Prefect log.

The flow-run id goes to the stages through RECFOUND_PIPELINE_ID / RECFOUND_PREFECT_FLOW_RUN_ID,
so every MLflow stage run of this execution carries it (recfound.tracking.mlflow_run).
The whole run holds the workspace (recfound.locks.workspace_turn): two pipelines in one
working tree would fight over DVC's lock and outputs. Runs waiting for it are served in
submission order and log who holds it, and since when, every workspace.queue_log_s.
"""

from __future__ import annotations

import json
import logging
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows.flow_process import PARAMS_FILE, record_flow_run_process
from flows.summary import StageOutcome, stage_outcome, summary
from recfound import processes
from recfound.config import load_config
from recfound.lifeline import die_with_parent
from recfound.locks import workspace_turn
from recfound.tracking import git_dvc, tags

GROUP_POLL_S = 0.2  # how often a stopping command's group is checked (and its output read)
PIPE_READ_BYTES = 65536


class CommandFailed(RuntimeError):
    """A command the flow ran exited non-zero (its output is in the flow's log above)."""


def _group_alive(proc: subprocess.Popen) -> bool:
    """Whether a process of the group `proc` leads still runs (the leader reaped first)."""
    proc.poll()
    return processes.group_alive(proc.pid)


def _drain(proc: subprocess.Popen, logger: logging.LoggerAdapter, wait_s: float) -> None:
    """Log what the stopping command still writes, so that it never blocks on a full pipe."""
    if proc.stdout is None or proc.stdout.closed:
        time.sleep(wait_s)
        return
    ready, _, _ = select.select([proc.stdout], [], [], wait_s)
    if not ready:
        return
    chunk = os.read(proc.stdout.fileno(), PIPE_READ_BYTES)
    if not chunk:  # every writer is gone
        proc.stdout.close()
    for line in chunk.decode(errors="replace").splitlines():
        if line.strip():
            logger.info(line.rstrip())


def stop_process_group(
    proc: subprocess.Popen, timeout_s: float, logger: logging.LoggerAdapter
) -> None:
    """SIGTERM the command `proc`, SIGKILL its whole group if anything is left after
    `timeout_s`, reap.

    SIGTERM goes to the command (dvc) only: the stage under it is tied to it and gets its own
    SIGTERM when it dies (recfound.lifeline). A group-wide SIGTERM would reach the stage
    twice (directly, then for its parent's death), and a second SIGTERM kills a stage at once,
    before it has closed its MLflow run. Nothing when the group is already gone. A second
    signal during the wait does not cut the stage's grace period short: it is re-raised once
    the group is gone, so no member outlives this call either way.
    """
    if not _group_alive(proc):
        return
    logger.info("stopping `%s` (process group %d)", " ".join(map(str, proc.args)), proc.pid)
    deadline = time.monotonic() + timeout_s
    interrupted: BaseException | None = None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    while _group_alive(proc) and time.monotonic() < deadline:
        try:
            _drain(proc, logger, GROUP_POLL_S)
        except BaseException as err:  # a second signal: the stage still gets its grace period
            interrupted = interrupted or err
    if _group_alive(proc):
        logger.warning("process group %d outlived %.0f s: SIGKILL", proc.pid, timeout_s)
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if interrupted is not None:
        raise interrupted


def close_dead_stage_runs(logger: logging.LoggerAdapter) -> None:
    """Close as KILLED, now, the MLflow runs of stages that died with a stopped command.

    A stage told to stop closes its own run; one that could not (SIGKILLed after the grace
    period, or stopped before it got that far) would read RUNNING until the next start.
    """
    cfg = load_config(PARAMS_FILE)
    if not cfg.tracking.enabled:
        return
    from mlflow.tracking import MlflowClient

    from recfound.tracking.mlflow_run import configure_mlflow
    from recfound.tracking.reconcile import close_dead_runs

    closed = close_dead_runs(MlflowClient(), configure_mlflow(cfg))
    if closed:
        logger.info("MLflow runs of the stopped stage, now KILLED: %s", ", ".join(closed))


def run_logged(
    cmd: list[str], env: Mapping[str, str] | None = None, stop_timeout_s: float | None = None
) -> None:
    """Run `cmd` in the working directory, each output line going to the Prefect logger.

    Raises CommandFailed on a non-zero exit. The command runs in a session (process group) of
    its own, with everything it starts (dvc -> shell -> `recfound stage`), and takes nothing
    with it: when this returns or raises, for whatever reason (exit, cancellation, which
    Prefect delivers as SIGTERM and its engine raises here as TerminationSignal, Ctrl-C), the
    group is stopped (stop_process_group): SIGTERM, then SIGKILL after `stop_timeout_s`
    (default: orchestration.stop_timeout_s). If this process dies without a word (SIGKILL,
    crash), the command gets SIGTERM from the kernel (die_with_parent) and the stage dies
    with its parent dvc.
    """
    if stop_timeout_s is None:
        stop_timeout_s = load_config(PARAMS_FILE).orchestration.stop_timeout_s
    logger = get_run_logger()
    logger.info("$ %s", " ".join(cmd))
    # stderr joins stdout so that errors and progress appear in order in one log
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        bufsize=1,
        start_new_session=True,  # its own group, which a teardown can stop as a whole
        preexec_fn=die_with_parent(),
    )
    ended = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip():
                logger.info(line.rstrip())
        code = proc.wait()
        ended = True
    finally:
        stop_process_group(proc, stop_timeout_s, logger)
        if not ended:
            close_dead_stage_runs(logger)
    if code != 0:
        raise CommandFailed(f"`{' '.join(cmd)}` exited with status {code}")


def stage_env(pipeline_id: str, progress_interval_s: float) -> dict[str, str]:
    """Environment of a stage command: the ids MLflow tags it with, unbuffered output."""
    return {
        **os.environ,
        tags.PIPELINE_ID_ENV: pipeline_id,
        tags.FLOW_RUN_ID_ENV: pipeline_id,
        "PYTHONUNBUFFERED": "1",  # lines reach the log as they are printed
        # the log is no terminal: recfound.progress prints a bar's line at most this often
        # (and tqdm reads its defaults from TQDM_* variables)
        "TQDM_MININTERVAL": str(progress_interval_s),
    }


def dvc_status(target: str) -> dict:
    """`dvc status <target> --json` (a stage or a .dvc file): what changed since DVC last
    recorded it ({} = nothing), e.g. {"train": [{"changed deps": {"data": "modified"}}]}."""
    done = subprocess.run(
        ["dvc", "status", target, "--json"], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout or "{}")


@task(task_run_name="dvc repro {stage}")
def repro_stage(stage: str, pipeline_id: str, progress_interval_s: float) -> StageOutcome:
    """`dvc repro <stage>`: runs the stage (and any stale upstream stage) or skips it."""
    outcome = stage_outcome(stage, dvc_status(stage))
    get_run_logger().info("%s: %s (%s)", stage, "runs" if outcome.ran else "skipped", outcome.why)
    run_logged(["dvc", "repro", stage], stage_env(pipeline_id, progress_interval_s))
    return outcome


def check_workspace(stages: list[str]) -> None:
    """Fail early, with the reason, when the working directory is not the pipeline's repo."""
    known = git_dvc.read_stages(".")
    if not known:
        raise FileNotFoundError(f"no dvc.yaml with stages in {Path.cwd()}: serve from the repo")
    unknown = [s for s in stages if s not in known]
    if unknown:
        raise ValueError(f"stages {unknown} are not in dvc.yaml (it has {', '.join(known)})")


# the hook is on the flow itself: a deployment runs its entrypoint, this very object
@flow(name="recfound", log_prints=True, on_running=[record_flow_run_process])
def recfound(stages: list[str] | None = None) -> State:
    """Run the pipeline's stages in order (default: orchestration.stages), each with retries.

    Ends Completed with a one-screen summary (flows.summary) as its message and in its log;
    the state's data is the list of StageOutcome.
    """
    cfg = load_config(PARAMS_FILE)
    stages = list(stages or cfg.orchestration.stages)
    check_workspace(stages)
    pipeline_id = str(flow_run.id)
    repro = repro_stage.with_options(
        retries=cfg.orchestration.retries, retry_delay_seconds=cfg.orchestration.retry_delay_s
    )
    # the workspace is one run's at a time, in submission order; waiting is logged
    logger = get_run_logger()
    with workspace_turn(cfg, flow_run.scheduled_start_time, pipeline_id, logger.info):
        outcomes = [
            repro(stage, pipeline_id, cfg.orchestration.progress_interval_s) for stage in stages
        ]
    report = summary(outcomes)
    logger.info("summary: %s", report)
    return Completed(message=report, data=outcomes)


if __name__ == "__main__":
    recfound()
