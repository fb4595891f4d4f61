"""What the serving process puts right before it serves: runs that a dead process left open.

A flow run whose process died without a word (the serving process or `recfound serve` killed,
a crash, a power cut) stays Running in Prefect, and keeps its deployment's only concurrency
slot: every later run of that deployment would wait in AwaitingConcurrencySlot for good. Its
stage's MLflow run, likewise, stays RUNNING.

So every flow run of our deployments records its process in the flow run's
`infrastructure_pid`, as `host:pid:start` (flows.flow_process `record_flow_run_process`, an
on_running hook; Prefect's own runner leaves the field empty), and when the serving process
starts,
`crash_orphaned_flow_runs` sets Crashed (forced, which releases the slot) every run of those
deployments in a state that holds a slot (Pending, Running, Cancelling) whose process is gone
from this host, or that has no process recorded: this serving process has only just started,
so no live process of it can be running them yet, and the one that was is gone. A run whose
recorded process still lives was left by a previous serving process: that process is stopped
first (SIGTERM: it stops its stage in order), so no live run is ever marked Crashed. Then
`close_dead_runs` closes the MLflow runs of dead stage processes (recfound.tracking.reconcile).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterable

from mlflow.tracking import MlflowClient
from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

from flows.deployments import build_deployments
from flows.flow_process import PARAMS_FILE
from recfound.config import Config, load_config
from recfound.tracking.mlflow_run import configure_mlflow
from recfound.tracking.reconcile import close_dead_runs, process_alive

# The states in which a flow run holds its deployment's concurrency slot (Prefect releases it
# on the way out of them: core_policy.ReleaseFlowConcurrencySlots).
SLOT_HOLDING_STATES = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
STOP_POLL_S = 0.2  # how often a stopped leftover process is checked
CRASH_MESSAGE = "its process is gone (found when the serving process started)"


def _parse_label(label: str | None) -> tuple[str, int, str | None] | None:
    """(host, pid, start) of a `host:pid:start` label; None when there is no usable one."""
    if not label:
        return None
    host, _, rest = label.partition(":")
    pid, _, start = rest.partition(":")
    return (host, int(pid), start or None) if pid.isdigit() else None


def process_gone(label: str | None, host: str) -> bool:
    """Whether the process a flow run recorded is known to be gone: no label, or one of this
    host whose process does not exist. A process of another host is never judged gone."""
    if not label:
        return True
    parsed = _parse_label(label)
    if parsed is None or parsed[0] != host:
        return False
    return not process_alive(parsed[1], parsed[2])


def stop_process(label: str | None, host: str, timeout_s: float) -> bool:
    """Stop the live process of this host that `label` names: SIGTERM (a flow run's process
    then stops its command group in order), SIGKILL after `timeout_s`. True if there was one."""
    parsed = _parse_label(label)
    if parsed is None or parsed[0] != host or not process_alive(parsed[1], parsed[2]):
        return False
    pid, start = parsed[1], parsed[2]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while process_alive(pid, start) and time.monotonic() < deadline:
        time.sleep(STOP_POLL_S)
    if process_alive(pid, start):
        os.kill(pid, signal.SIGKILL)
    return True


def crash_orphaned_flow_runs(
    client: SyncPrefectClient, deployment_names: Iterable[str], stop_timeout_s: float
) -> list[FlowRun]:
    """Force Crashed every slot-holding run of these deployments, once its process is gone.

    Called before this serving process serves anything, so a run whose process still lives
    was started by a previous serving process, which is gone (`recfound serve` stopped what it
    left): that process is stopped first (stop_process), never marked Crashed alive.
    `deployment_names` are `flow/deployment`; ones not created yet are skipped. Returns the
    runs crashed, as they were before.
    """
    ids = []
    for name in deployment_names:
        try:
            ids.append(client.read_deployment_by_name(name).id)
        except ObjectNotFound:
            continue
    if not ids:
        return []
    runs = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            deployment_id=FlowRunFilterDeploymentId(any_=ids),
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=SLOT_HOLDING_STATES)),
        )
    )
    host = socket.gethostname()
    for run in runs:
        if stop_process(run.infrastructure_pid, host, stop_timeout_s):
            print(f"flow run {run.name} ({run.id}): stopped its process left by a previous serve")
    crashed = [run for run in runs if process_gone(run.infrastructure_pid, host)]
    for run in crashed:
        # force: a run in Cancelling may only go to Cancelled by the rules; we know better
        client.set_flow_run_state(run.id, Crashed(message=CRASH_MESSAGE), force=True)
    return crashed


def reconcile_on_start(cfg: Config, deployment_names: Iterable[str]) -> None:
    """Crash the orphaned flow runs of our deployments, close dead stages' MLflow runs; log."""
    with get_client(sync_client=True) as client:
        crashed = crash_orphaned_flow_runs(
            client, deployment_names, cfg.orchestration.stop_timeout_s
        )
        for run in crashed:
            state = run.state.name if run.state else "no state"
            print(f"flow run {run.name} ({run.id}) was {state}: Crashed, {CRASH_MESSAGE}")
    if cfg.tracking.enabled:
        experiment_id = configure_mlflow(cfg)
        for run_id in close_dead_runs(MlflowClient(), experiment_id):
            print(f"MLflow run {run_id} was RUNNING, its process is gone: KILLED")


def main() -> None:
    """`python -m flows.reconcile`: what `recfound serve` runs before serving the deployments."""
    cfg = load_config(PARAMS_FILE)
    reconcile_on_start(cfg, [f"{d.flow_name}/{d.name}" for d in build_deployments(cfg)])


if __name__ == "__main__":
    main()
