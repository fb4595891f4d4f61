"""Runs that cannot outlive, or be outlived by, their processes (no servers needed).

- close_dead_runs: an MLflow run left RUNNING by a process that is gone (or whose pid now
  belongs to another process) is closed KILLED; live, foreign and untagged runs are not.
- process_gone: how a restart judges the process a Prefect flow run recorded.
- run_logged's process handling: a command started with die_with_parent dies when the
  process that started it is SIGKILLed, and stop_process_group stops its whole group,
  grandchildren and SIGTERM-ignoring members included.
The end-to-end versions (cancel, serve restart, a SIGKILLed stage) are in tests/test_flows.py.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from flows.flow_process import process_label
from flows.pipeline import stop_process_group
from flows.reconcile import process_gone
from recfound import processes
from recfound.lifeline import die_with_parent
from recfound.tracking import tags
from recfound.tracking.reconcile import close_dead_runs, process_identity

GONE_WITHIN_S = 10.0
LOGGER = logging.LoggerAdapter(logging.getLogger(__name__), {})


def _dead_process_identity() -> dict[str, str]:
    """The identity tags of a process that ran and is gone now."""
    proc = subprocess.Popen(["sleep", "60"])
    identity = process_identity(proc.pid)
    proc.kill()
    proc.wait()
    return identity


def _wait_gone(pid: int, started: float | None) -> bool:
    deadline = time.monotonic() + GONE_WITHIN_S
    while processes.alive(pid, started):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_close_dead_runs_kills_exactly_the_runs_whose_process_is_gone(tmp_path: Path) -> None:
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("reconcile", artifact_location=tmp_path.as_uri())
    me = process_identity()
    reused_pid = {**me, tags.PROCESS_START: f"{float(me[tags.PROCESS_START]) - 3600:.2f}"}
    elsewhere = {**_dead_process_identity(), tags.PROCESS_HOST: "another-host"}
    runs = {
        name: client.create_run(experiment, tags=run_tags, run_name=name).info.run_id
        for name, run_tags in {
            "dead": _dead_process_identity(),
            "reused_pid": reused_pid,
            "alive": me,
            "elsewhere": elsewhere,
            "untagged": {},
        }.items()
    }
    closed = close_dead_runs(client, experiment)
    assert sorted(closed) == sorted([runs["dead"], runs["reused_pid"]])
    status = {name: client.get_run(run_id).info for name, run_id in runs.items()}
    assert {name: info.status for name, info in status.items()} == {
        "dead": "KILLED",
        "reused_pid": "KILLED",
        "alive": "RUNNING",
        "elsewhere": "RUNNING",
        "untagged": "RUNNING",
    }
    assert status["dead"].end_time is not None
    assert close_dead_runs(client, experiment) == []  # nothing left to close


def test_a_flow_run_process_is_gone_when_unrecorded_or_dead_here_never_elsewhere() -> None:
    host = socket.gethostname()
    dead = _dead_process_identity()
    dead_label = f"{host}:{dead[tags.PROCESS_PID]}:{dead[tags.PROCESS_START]}"
    assert process_gone(None, host)
    assert process_gone(dead_label, host)
    assert not process_gone(process_label(), host)
    assert not process_gone(dead_label.replace(host, "another-host", 1), host)


def test_a_command_dies_with_the_process_that_started_it() -> None:
    # a parent that starts `sleep` the way run_logged starts dvc, then is SIGKILLed
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, time\n"
            "from recfound.lifeline import die_with_parent\n"
            "child = subprocess.Popen(['sleep', '300'], start_new_session=True,"
            " preexec_fn=die_with_parent())\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(300)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(parent.stdout.readline())
    started = processes.start_time(child)
    assert started is not None
    parent.kill()
    parent.wait()
    assert _wait_gone(child, started), "the command outlived the process that started it"


def test_stopping_a_group_stops_grandchildren_and_kills_what_ignores_sigterm() -> None:
    # sh starts a grandchild that ignores SIGTERM (the ignore is inherited): SIGKILL must follow
    proc = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=die_with_parent(),
    )
    grandchild = int(proc.stdout.readline())
    started = processes.start_time(grandchild)
    timeout_s = 1.0
    begun = time.monotonic()
    stop_process_group(proc, timeout_s, LOGGER)
    assert time.monotonic() - begun < timeout_s + GONE_WITHIN_S
    assert proc.returncode == -signal.SIGKILL
    assert _wait_gone(grandchild, started)


def test_stopping_a_group_that_is_gone_does_nothing() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    stop_process_group(proc, 1.0, LOGGER)
    assert proc.returncode == 0
