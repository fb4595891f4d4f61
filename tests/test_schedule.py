"""The retrain schedule fires: a run the Prefect scheduler created, Completed, untouched by hand.

`recfound serve` in a tiny pipeline repository (tests/test_flows.py's) with the data-change
deployment scheduled every few seconds and Prefect's scheduler services looping every second.
Nothing triggers a run: the test only waits for one that the scheduler created
(`auto_scheduled`) to reach Completed, then reads the Prefect server's log, which must hold no
traceback. With SQLAlchemy 2.1 (unpinned, what a fresh install got) every scheduler cycle
failed with "Can't evaluate bulk DML statement" and no scheduled run was ever created; this
test guards the pins in pyproject.toml against the next upgrade.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from test_flows import Served, _set, new_pipeline_repo, serve_env, serving

from flows.retrain import UNCHANGED

INTERVAL_S = 5
SCHEDULED_RUN_WITHIN_S = 180
# Prefect's scheduler services wake every 60 s (recent deployments: 5 s) by default
FAST_SCHEDULER = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
}


@pytest.fixture(scope="module")
def scheduled(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    base, repo, ports = new_pipeline_repo(tmp_path_factory, tiny_model_dir, "schedule")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    _set(params, "orchestration.retrain_interval_s", INTERVAL_S)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    served = Served(repo, None, serve_env(ports["prefect"], **FAST_SCHEDULER))
    with serving(served, base / "serve.log"):
        yield served


def _first_completed_scheduled_run(served: Served):
    with served.client() as client:
        deployment = client.read_deployment_by_name("recfound-retrain/data-change")
        deadline = time.monotonic() + SCHEDULED_RUN_WITHIN_S
        while True:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment.id])
                )
            )
            done = [r for r in runs if r.auto_scheduled and r.state and r.state.is_completed()]
            if done:
                return done[0], runs
            assert served.proc.poll() is None, "recfound serve died"
            assert time.monotonic() < deadline, (
                f"no scheduled run Completed in {SCHEDULED_RUN_WITHIN_S} s: "
                f"{[(r.name, r.auto_scheduled, r.state_name) for r in runs]}\n"
                + _server_log(served)[-3000:]
            )
            time.sleep(1)


def _server_log(served: Served) -> str:
    return (served.repo / ".prefect" / "logs" / "prefect-server.log").read_text(errors="replace")


def test_the_retrain_schedule_creates_a_run_that_completes_without_a_manual_trigger(
    scheduled: Served,
) -> None:
    begun = time.monotonic()
    run, runs = _first_completed_scheduled_run(scheduled)
    print(f"scheduled run Completed {time.monotonic() - begun:.1f} s after serve was ready")
    assert all(r.auto_scheduled for r in runs), "a run this test did not start was not scheduled"
    assert run.state.message.startswith(UNCHANGED), run.state.message


def test_the_prefect_server_log_holds_no_traceback(scheduled: Served) -> None:
    _first_completed_scheduled_run(scheduled)
    log = _server_log(scheduled)
    assert "Traceback" not in log, log[log.index("Traceback") - 200 :][:3000]
