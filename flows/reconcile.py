"""What the serving process puts right before it serves: runs that a dead process left open.

A flow run whose process died without a word (the serving process or `recfound serve` killed,
a crash, a power cut) stays Running in Prefect, and keeps its deployment's only concurrency
slot: every later run of that deployment would wait in AwaitingConcurrencySlot for good. Its
stage's MLflow run, likewise, stays RUNNING.

So every flow run of our deployments records its process in the flow run's
`infrastructure_pid`, as `host:pid:start` (`record_flow_run_process`, an on_running hook;
Prefect's own runner leaves the field empty), and when the serving process starts,
`crash_orphaned_flow_runs` sets Crashed (forced, which releases the slot) every run of those
deployments in a state that holds a slot (Pending, Running, Cancelling) whose process is gone
from this host, or that has no process recorded: this serving process has only just started,
so no live process of it can be running them yet, and the one that was is gone. Then
`close_dead_runs` closes the MLflow runs of dead stage processes (recfound.tracking.reconcile).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

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

from recfound.config import Config, load_config
from recfound.tracking import tags
from recfound.tracking.mlflow_run import configure_mlflow
from recfound.tracking.reconcile import close_dead_runs, process_alive, process_identity

# The states in which a flow run holds its deployment's concurrency slot (Prefect releases it
# on the way out of them: core_policy.ReleaseFlowConcurrencySlots).
SLOT_HOLDING_STATES = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
CRASH_MESSAGE = "its process is gone (found when the serving process started)"


def process_label() -> str:
    """This process as `host:pid:start` (start: see recfound.tracking.reconcile)."""
    identity = process_identity()
    return ":".join(
        identity.get(key, "") for key in (tags.PROCESS_HOST, tags.PROCESS_PID, tags.PROCESS_START)
    )


def process_gone(label: str | None, host: str) -> bool:
    """Whether the process a flow run recorded is known to be gone: no label, or one of this
    host whose process does not exist. A process of another host is never judged gone."""
    if not label:
        return True
    recorded_host, _, rest = label.partition(":")
    pid, _, start = rest.partition(":")
    if recorded_host != host or not pid.isdigit():
        return False
    return not process_alive(int(pid), start or None)


def record_flow_run_process(flow: Any, flow_run: FlowRun, state: Any) -> None:
    """on_running hook: record the flow run's process in its infrastructure_pid."""
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, infrastructure_pid=process_label())


def crash_orphaned_flow_runs(
    client: SyncPrefectClient, deployment_names: Iterable[str]
) -> list[FlowRun]:
    """Force Crashed every slot-holding run of these deployments whose process is gone.

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
    crashed = [run for run in runs if process_gone(run.infrastructure_pid, host)]
    for run in crashed:
        # force: a run in Cancelling may only go to Cancelled by the rules; we know better
        client.set_flow_run_state(run.id, Crashed(message=CRASH_MESSAGE), force=True)
    return crashed


def reconcile_on_start(cfg: Config, deployment_names: Iterable[str]) -> None:
    """Crash the orphaned flow runs of our deployments, close dead stages' MLflow runs; log."""
    with get_client(sync_client=True) as client:
        for run in crash_orphaned_flow_runs(client, deployment_names):
            state = run.state.name if run.state else "no state"
            print(f"flow run {run.name} ({run.id}) was {state}: Crashed, {CRASH_MESSAGE}")
    if cfg.tracking.enabled:
        experiment_id = configure_mlflow(cfg)
        for run_id in close_dead_runs(MlflowClient(), experiment_id):
            print(f"MLflow run {run_id} was RUNNING, its process is gone: KILLED")


def main() -> None:
    """`python -m flows.reconcile`: what `recfound serve` runs before serving the deployments."""
    from flows.deployments import PARAMS_FILE, build_deployments

    cfg = load_config(PARAMS_FILE)
    reconcile_on_start(cfg, [f"{d.flow_name}/{d.name}" for d in build_deployments(cfg)])


if __name__ == "__main__":
    main()
