"""Flow `recfound-retrain`: retrain when the raw data no longer matches data.dvc.

Scheduled every `orchestration.retrain_interval_s` (deployment `recfound-retrain/data-change`):
1. `dvc status <data>.dvc`: if data/ matches what data.dvc records, finish Completed with the
   message "unchanged" and train nothing.
2. Otherwise `dvc add <data>` (new md5 in data.dvc, files into the DVC cache), then
   `git commit` data.dvc, but only when the working tree was clean apart from data.dvc
   before the add (what `dvc repro` writes itself - dvc.lock, .gitignore entries, uncached
   metrics and plots - does not count): committing would otherwise either sweep someone's
   unfinished edits into an automatic commit or leave a commit that does not describe the
   tree that trained. When skipped, the log names the paths that blocked it, and the stage
   runs record the dirty tree.
3. Run the `recfound` flow as a subflow (the same stages, retries and tracking as
   `recfound/train`); the stage runs are tagged with the data.dvc commit. The run's message
   says "retrained" only when train ran, then the subflow's stage summary (flows.summary).
4. If data.dvc was committed and only what the pipeline writes changed since (dvc.lock,
   .gitignore entries, uncached metrics and plots), commit that too, as DVC suggests after a
   run, so the tree is clean for the next change; otherwise leave it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows.flow_process import record_flow_run_process
from flows.pipeline import PARAMS_FILE, dvc_status, recfound, run_logged
from flows.summary import StageOutcome, ran, summary
from recfound.config import Config, load_config
from recfound.locks import workspace_turn
from recfound.tracking import git_dvc

UNCHANGED = "unchanged"
RETRAINED = "retrained"
NOT_RETRAINED = "data versioned, not retrained (train was not among the stages that ran)"


def dvc_file(cfg: Config) -> str:
    """The .dvc file that tracks the raw data directory (data -> data.dvc)."""
    return f"{cfg.paths.data}.dvc"


@task
def data_changed(cfg: Config) -> bool:
    """True when data/ differs from data.dvc (or data.dvc does not exist yet)."""
    logger = get_run_logger()
    if not cfg.paths.data.is_dir():
        raise FileNotFoundError(f"{cfg.paths.data}: raw data directory not found")
    if not Path(dvc_file(cfg)).is_file():
        logger.info("%s does not exist yet: the data is new", dvc_file(cfg))
        return True
    # {} when up to date, else {"data.dvc": [{"changed outs": {"data": "modified"}}]}
    status = dvc_status(dvc_file(cfg))
    if status:
        logger.info("data changed: %s", json.dumps(status))
    return bool(status)


def _commit(cfg: Config, paths: list[str], message: str) -> None:
    """`git add` + `git commit` of exactly `paths`, as orchestration.commit_author_*."""
    identity = {
        "GIT_AUTHOR_NAME": cfg.orchestration.commit_author_name,
        "GIT_AUTHOR_EMAIL": cfg.orchestration.commit_author_email,
        "GIT_COMMITTER_NAME": cfg.orchestration.commit_author_name,
        "GIT_COMMITTER_EMAIL": cfg.orchestration.commit_author_email,
    }
    env = {**os.environ, **identity}
    run_logged(["git", "add", "--", *paths], env)
    run_logged(["git", "commit", "-m", message, "--", *paths], env)


@task
def add_and_commit(cfg: Config) -> bool:
    """`dvc add` the data; commit data.dvc when the tree is otherwise clean. True if committed.

    Clean means no changes to source, params or other tracked files; what `dvc repro` wrote
    itself (dvc.lock, .gitignore entries, uncached outputs of an earlier run) does not count.
    """
    logger = get_run_logger()
    target = dvc_file(cfg)
    blocking = [p for p in git_dvc.source_dirty_paths(".") if p != target]
    run_logged(["dvc", "add", str(cfg.paths.data)])
    if blocking:
        logger.warning(
            "not committing %s: the working tree has other uncommitted changes (%s); "
            "commit or discard them and the next change will be committed",
            target,
            ", ".join(blocking),
        )
        return False
    # the first `dvc add` of a directory also lists it in .gitignore: part of the same change
    touched = [
        p for p in git_dvc.git_dirty_paths(".") if p == target or Path(p).name == ".gitignore"
    ]
    md5 = git_dvc.data_md5(".", target)
    _commit(cfg, touched, f"data: {target} -> md5 {md5} (recfound-retrain {flow_run.id})")
    return True


@task
def commit_pipeline_record(cfg: Config) -> bool:
    """After a retrain that committed its data: commit what DVC says to commit.

    That is dvc.lock, the .gitignore entries and the uncached outputs (metrics, plots). Only
    such files may have changed meanwhile; anything else means someone is editing the tree,
    and the commit is left to them. True if committed.
    """
    logger = get_run_logger()
    others = git_dvc.source_dirty_paths(".")
    if others:
        logger.warning("not committing dvc.lock: other uncommitted changes (%s)", ", ".join(others))
        return False
    record = git_dvc.git_dirty_paths(".")
    if record:
        _commit(cfg, record, f"dvc.lock: pipeline outputs of recfound-retrain {flow_run.id}")
    return bool(record)


# the hook is on the flow itself: a deployment runs its entrypoint, this very object
@flow(name="recfound-retrain", log_prints=True, on_running=[record_flow_run_process])
def retrain(stages: list[str] | None = None) -> State:
    """Retrain if and only if the raw data changed (see module docstring).

    `stages` is passed to the pipeline (default: orchestration.stages).
    """
    cfg = load_config(PARAMS_FILE)
    # Check, add, pipeline and commits all touch the workspace: hold it throughout (the
    # pipeline subflow runs in this process and enters the turn this run holds).
    with workspace_turn(
        cfg, flow_run.scheduled_start_time, str(flow_run.id), get_run_logger().info
    ):
        if not data_changed(cfg):
            message = f"{UNCHANGED}: {cfg.paths.data} matches {dvc_file(cfg)}; nothing to do"
            get_run_logger().info(message)
            return Completed(message=message)
        committed = add_and_commit(cfg)
        outcomes = recfound(stages=stages, return_state=True).result()
        if committed:
            commit_pipeline_record(cfg)
        message = f"{outcome_message(outcomes, committed)}\n{summary(outcomes)}"
        # the pipeline subflow logged its summary under its own run: say it here as well
        get_run_logger().info(message)
        return Completed(message=message)


def outcome_message(outcomes: list[StageOutcome], committed: bool) -> str:
    """First line of the run's message; "retrained" only when train ran."""
    what = RETRAINED if ran(outcomes, "train") else NOT_RETRAINED
    return what + (
        "; data.dvc committed" if committed else "; data.dvc not committed (tree not clean)"
    )


if __name__ == "__main__":
    retrain()
