"""Serve both deployments from this repository: `python -m flows.deployments` (in the repo root).

- `recfound/train`: the pipeline on demand (`prefect deployment run recfound/train`);
- `recfound-retrain/data-change`: the data-change check every orchestration.retrain_interval_s.

Each deployment runs one flow run at a time: a second run waits in the state
AwaitingConcurrencySlot until the first ends (deployment concurrency limit 1, collision
strategy ENQUEUE, enforced by the Prefect server). Across the two deployments, the flows take
turns at the working tree through recfound.locks.workspace_turn (a file lock and a
first-come queue in the repository), so a retrain's pipeline and a train run never share it.
Flow runs execute in this process's working directory; PREFECT_API_URL must point at the
server (`recfound serve` sets it).
"""

from __future__ import annotations

import datetime

from prefect import serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import EntrypointType, RunnerDeployment

from flows.pipeline import PARAMS_FILE, recfound
from flows.retrain import retrain
from recfound.config import Config, load_config

TRAIN = "train"
DATA_CHANGE = "data-change"


def one_at_a_time() -> ConcurrencyLimitConfig:
    """Deployment concurrency: one active run, later runs queued (not cancelled)."""
    return ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def build_deployments(cfg: Config) -> list[RunnerDeployment]:
    """The train and data-change deployments (module entrypoints: importable from anywhere).

    Their flow runs record their process (the flows' own on_running hook, flows.reconcile), so
    that a restart can tell a run whose process died from one that still runs.
    """
    train = recfound.to_deployment(
        name=TRAIN,
        concurrency_limit=one_at_a_time(),
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="The RecFound pipeline: dvc repro, stage by stage, with retries.",
    )
    data_change = retrain.to_deployment(
        name=DATA_CHANGE,
        interval=datetime.timedelta(seconds=cfg.orchestration.retrain_interval_s),
        concurrency_limit=one_at_a_time(),
        entrypoint_type=EntrypointType.MODULE_PATH,
        description="Retrain when data/ no longer matches data.dvc; otherwise 'unchanged'.",
    )
    return [train, data_change]


def main() -> None:
    """Serve both deployments until interrupted (their schedules pause on shutdown)."""
    cfg = load_config(PARAMS_FILE)
    # `recfound serve` has run flows.reconcile before this: runs left open by a dead process
    # no longer hold their deployment's slot
    serve(*build_deployments(cfg))


if __name__ == "__main__":
    main()
