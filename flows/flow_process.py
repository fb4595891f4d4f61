"""What each flow run records of its own process, and how it ends with the runner that
started it: the flows' on_running hook (`record_flow_run_process`).

The serving process reads the record back when it starts (flows.reconcile): a run whose
recorded process is gone is crashed, which releases its deployment's slot. Apart from
flows.reconcile so that the flows (flows.pipeline, flows.retrain) import this and the
reconciliation imports the deployments (hence the flows) without a circle.
"""

from __future__ import annotations

import functools
import os
from typing import Any

from prefect import get_client
from prefect.client.schemas.objects import FlowRun

from recfound.config import load_config
from recfound.lifeline import end_with_parent
from recfound.tracking import tags
from recfound.tracking.reconcile import process_identity

# Set by Prefect's runner in the environment of the process it starts for a flow run.
FLOW_RUN_ID_ENV = "PREFECT__FLOW_RUN_ID"
PARAMS_FILE = "params.yaml"  # the flows run in the repository root (recfound serve)


def process_label() -> str:
    """This process as `host:pid:start` (start: see recfound.tracking.reconcile)."""
    identity = process_identity()
    return ":".join(
        identity.get(key, "") for key in (tags.PROCESS_HOST, tags.PROCESS_PID, tags.PROCESS_START)
    )


def started_for(flow_run: FlowRun) -> bool:
    """Whether this process was started by a runner to execute `flow_run` (a served
    deployment's run), not a flow called in some other process (a test, a script)."""
    return os.environ.get(FLOW_RUN_ID_ENV) == str(flow_run.id)


def record_flow_run_process(flow: Any, flow_run: FlowRun, state: Any) -> None:
    """on_running hook of the flows themselves (the entrypoints the deployments run): record
    the flow run's process in its infrastructure_pid, and when a runner started this process
    for the run, end it with that runner (lifeline.end_with_parent: its `dvc repro` is stopped
    as a cancellation stops it, SIGTERM then SIGKILL after orchestration.stop_timeout_s, and the
    process exits)."""
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, infrastructure_pid=process_label())
    if started_for(flow_run):
        cfg = load_config(PARAMS_FILE)
        _end_with_runner(cfg.workspace.launcher_poll_s, cfg.orchestration.stop_timeout_s)


@functools.cache  # once per process: a subflow's run starts in its parent's process
def _end_with_runner(poll_s: float, grace_s: float) -> None:
    end_with_parent(poll_s, grace_s)
