"""Close the MLflow runs that a killed stage process left RUNNING.

A stage ends its MLflow run itself (FINISHED, FAILED, or KILLED when it is told to stop), but a
process killed outright (SIGKILL, out of memory, power loss) ends nothing, and its run would
read RUNNING for good. So every stage run is tagged with the identity of its process (host,
pid and the process's start time, which tells a reused pid from the original), and
`close_dead_runs` sets KILLED every RUNNING run of the experiment whose process is gone from
this host. `recfound serve` calls it when it starts and every stage run when it starts: one
search, cheap.

Runs of other hosts are left alone: whether their process lives cannot be seen from here.
Process identity and liveness come from recfound.processes (pid + start time, /proc).
"""

from __future__ import annotations

import os
import socket
import time

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from recfound import processes
from recfound.tracking import tags


def process_identity(pid: int | None = None) -> dict[str, str]:
    """Tags naming process `pid` (default: this one) on this host, as stage runs carry them:
    host, pid and start time (epoch seconds; absent where it cannot be known)."""
    pid = os.getpid() if pid is None else pid
    identity = {tags.PROCESS_HOST: socket.gethostname(), tags.PROCESS_PID: str(pid)}
    started = processes.start_time(pid)
    if started is not None:
        identity[tags.PROCESS_START] = f"{started:.2f}"
    return identity


def process_alive(pid: int, started: str | None) -> bool:
    """Whether process `pid` of this host, started at `started` (a PROCESS_START value; None
    or empty: any start), still runs."""
    return processes.alive(pid, float(started) if started else None)


def close_dead_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Set KILLED (ended now) each RUNNING run of the experiment whose process, on this host,
    is gone; returns their run ids. Runs without a process tag are left alone."""
    running = client.search_runs(
        [experiment_id],
        f"attributes.status = 'RUNNING' and tags.`{tags.PROCESS_HOST}` = '{socket.gethostname()}'",
    )
    closed = []
    for run in running:
        run_tags = run.data.tags
        pid = run_tags.get(tags.PROCESS_PID, "")
        if not pid.isdigit() or process_alive(int(pid), run_tags.get(tags.PROCESS_START)):
            continue
        client.set_terminated(
            run.info.run_id, RunStatus.to_string(RunStatus.KILLED), end_time=int(time.time() * 1000)
        )
        closed.append(run.info.run_id)
    return closed
