"""`recfound serve`: the Prefect server, the MLflow UI and the deployments' serving process.

All three are child processes of this one, each in its own process group and bound to
orchestration.host (127.0.0.1 by default). The Prefect server and the MLflow UI start
together, the serving process once the Prefect API answers; each is waited on until it
answers its health check; then this process waits. Ctrl-C or SIGTERM (or any child dying)
stops them all: SIGTERM to each process group, newest first, SIGKILL after
orchestration.stop_timeout_s. Their output goes to log files under .prefect/logs/.

Killed outright (SIGKILL, the OOM killer), this process cannot stop anything, so each child
is started asking the kernel for a signal when this process dies (PR_SET_PDEATHSIG: SIGTERM,
SIGKILL for the deployments' serving process, whose flow runs then stop themselves), and what
it started is recorded in .prefect/serve.json. A restart reads that record first: it refuses
while the recorded `recfound serve` still runs, and stops whatever its children left alive
(process group by group) before it starts its own, so no orphan answers its health checks or
holds its ports.

Prefect keeps its state under .prefect/ in the repository (PREFECT_HOME and its SQLite
database); MLflow uses tracking.uri (MLFLOW_TRACKING_URI overrides; a remote tracking server
is used as it is, and no local UI is started).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from recfound import processes
from recfound.atomic import atomic_file
from recfound.config import Config
from recfound.errors import RecFoundError
from recfound.lifeline import die_with_parent
from recfound.tracking.mlflow_run import tracking_uri

PREFECT_DIR = ".prefect"
RECORD_FILE = "serve.json"  # under PREFECT_DIR: this serve and the process groups it started
HEALTH_POLL_S = 0.5
LOG_TAIL_CHARS = 3000


@dataclass
class Service:
    """A child process and how to tell that it is ready."""

    name: str
    cmd: list[str]
    health_url: str
    needs_prefect: bool = False  # started only once the Prefect server answers
    # run to completion first (its output to the same log, and here): the deployments' start
    # must not look healthy before a previous life's runs are reconciled
    prepare: list[str] | None = None
    env: dict[str, str] = field(default_factory=dict)
    # what the kernel sends it when this process dies outright (PR_SET_PDEATHSIG)
    death_signal: int = signal.SIGTERM
    proc: subprocess.Popen | None = None
    log: Path | None = None


def prefect_env(cfg: Config, root: Path) -> dict[str, str]:
    """Prefect settings that keep its state in the repository and point clients at the server."""
    home = (root / PREFECT_DIR).resolve()
    host, port = cfg.orchestration.host, cfg.orchestration.prefect_port
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_API_URL": f"http://{host}:{port}/api",
        "PREFECT_SERVER_API_HOST": host,
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # `prefect deployment run … --watch` follows a run's events and logs over websockets;
        # the server streams logs out only when told to (off by default in Prefect 3.8), and
        # without them the watch shows state changes but nothing of what the stages did.
        "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true",
        "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true",
    }


def services(cfg: Config, root: Path) -> list[Service]:
    """Prefect server, MLflow UI (only for a local tracking store), deployments' server."""
    host, port = cfg.orchestration.host, cfg.orchestration.prefect_port
    bin_dir = Path(sys.executable).parent  # the console scripts of this environment
    api = f"http://{host}:{port}/api"
    prefect = Service(
        "prefect-server",
        [str(bin_dir / "prefect"), "server", "start", "--host", host, "--port", str(port)],
        f"{api}/health",
    )
    found = [prefect]
    uri = tracking_uri(cfg)
    if not uri.startswith(("http://", "https://")):
        found.append(
            Service(
                "mlflow-ui",
                [
                    str(bin_dir / "mlflow"),
                    "server",
                    "--backend-store-uri",
                    uri,
                    "--default-artifact-root",
                    str(Path(cfg.tracking.artifact_root).resolve()),
                    "--host",
                    host,
                    "--port",
                    str(cfg.tracking.ui_port),
                    "--workers",
                    "1",
                ],
                f"http://{host}:{cfg.tracking.ui_port}/health",
                # the UI needs no server-side job runner (a pool of worker processes)
                env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            )
        )
    found.append(
        Service(
            "deployments",
            [sys.executable, "-m", "flows.deployments"],
            f"{api}/deployments/name/recfound/train",
            needs_prefect=True,
            prepare=[sys.executable, "-m", "flows.reconcile"],
            # Not SIGTERM: Prefect's runner answers it by cancelling its runs through a server
            # that is going down with us, and hangs. Its flow runs watch it and stop their
            # stages in order when it is gone (flows.flow_process).
            death_signal=signal.SIGKILL,
        )
    )
    return found


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path | None) -> str:
    if path is None or not path.is_file():
        return ""
    return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]


def start(service: Service, env: dict[str, str], log_dir: Path) -> None:
    """Start `service` in a new session (its own process group), output to its log file."""
    service.log = log_dir / f"{service.name}.log"
    if service.prepare:
        run_prepare(service, env)
    with service.log.open("ab") as log:
        service.proc = subprocess.Popen(
            service.cmd,
            env={**env, **service.env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the group ourselves
            preexec_fn=die_with_parent(service.death_signal),  # if we are killed outright
        )


def run_prepare(service: Service, env: dict[str, str]) -> None:
    """Run `service.prepare` to completion; its output goes to the service's log and here."""
    assert service.prepare is not None and service.log is not None
    done = subprocess.run(
        service.prepare,
        env={**env, **service.env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    with service.log.open("a", encoding="utf-8") as log:
        log.write(done.stdout)
    for line in done.stdout.splitlines():
        print(f"  {service.name}: {line}", flush=True)
    if done.returncode != 0:
        raise RecFoundError(
            f"{service.name}: `{' '.join(service.prepare)}` exited with status "
            f"{done.returncode}; log {service.log}:\n{_tail(service.log)}"
        )


def wait_healthy(service: Service, timeout_s: float) -> None:
    """Poll the health URL until it answers 200; fail if the process dies or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if service.proc is not None and service.proc.poll() is not None:
            raise RecFoundError(
                f"{service.name} exited with status {service.proc.returncode}; "
                f"log {service.log}:\n{_tail(service.log)}"
            )
        if _answers(service.health_url):
            return
        time.sleep(HEALTH_POLL_S)
    raise RecFoundError(
        f"{service.name} not healthy after {timeout_s:.0f} s ({service.health_url}); "
        f"log {service.log}:\n{_tail(service.log)}"
    )


def stop_group(pgid: int, timeout_s: float, reap: Callable[[], object] | None = None) -> None:
    """SIGTERM process group `pgid`, SIGKILL it if any member outlives `timeout_s`.

    The whole group is waited for, not only its leader: servers fork workers (uvicorn, job
    consumers) that may take longer to exit than the process that started them. `reap`
    collects the leader when it is our child (or the group never empties).
    """
    if not processes.group_alive(pgid):
        return
    os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not processes.group_alive(pgid):
            return
        time.sleep(HEALTH_POLL_S)
    os.killpg(pgid, signal.SIGKILL)
    if reap is not None:
        reap()


def stop(started: list[Service], timeout_s: float) -> None:
    """Stop each service's process group (stop_group), newest first."""
    for service in reversed(started):
        proc = service.proc
        if proc is None or not processes.group_alive(proc.pid):
            continue
        stop_group(proc.pid, timeout_s, reap=proc.poll)
        proc.wait()
        print(f"stopped {service.name}", flush=True)


@dataclass(frozen=True)
class Recorded:
    """A process `recfound serve` recorded: which, and its identity (pid + start time)."""

    name: str
    pid: int
    started: float | None

    def alive(self) -> bool:
        return processes.alive(self.pid, self.started)


def _recorded(name: str, pid: int) -> dict:
    return {"name": name, "pid": pid, "started": processes.start_time(pid)}


def write_record(root: Path, started: list[Service]) -> None:
    """Record this process and the process groups it started (.prefect/serve.json)."""
    children = [_recorded(s.name, s.proc.pid) for s in started if s.proc is not None]
    record = {"serve": _recorded("recfound serve", os.getpid()), "children": children}
    with atomic_file(root / PREFECT_DIR / RECORD_FILE) as out:
        json.dump(record, out, indent=2)


def read_record(root: Path) -> tuple[Recorded, list[Recorded]] | None:
    """The serve and children a previous `recfound serve` recorded; None when there is none
    (or it cannot be read: then there is nothing we could stop by it either)."""
    try:
        record = json.loads((root / PREFECT_DIR / RECORD_FILE).read_text(encoding="utf-8"))
        return Recorded(**record["serve"]), [Recorded(**c) for c in record["children"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def take_over(root: Path, timeout_s: float) -> None:
    """Refuse while a previous `recfound serve` of this repository runs; stop what a dead one
    left running (its children's process groups), so that our services start alone."""
    found = read_record(root)
    if found is None:
        return
    previous, children = found
    if previous.pid != os.getpid() and previous.alive():
        raise RecFoundError(
            f"recfound serve already runs in {root} (pid {previous.pid}, started "
            f"{processes.local_time(previous.started)}): stop it first (Ctrl-C in its "
            f"terminal, or `kill {previous.pid}`)"
        )
    for child in children:
        if child.alive():
            print(
                f"stopping {child.name} (process group {child.pid}), left running by a "
                f"previous recfound serve (pid {previous.pid})",
                flush=True,
            )
            stop_group(child.pid, timeout_s)


def _port_answers(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def check_ports_free(cfg: Config, wanted: list[Service]) -> None:
    """Fail in one line when something already listens on a port a service needs: its health
    check would be answered by a stranger, and the service itself would fail to bind."""
    host = cfg.orchestration.host
    ports = {"prefect-server": ("orchestration.prefect_port", cfg.orchestration.prefect_port)}
    ports["mlflow-ui"] = ("tracking.ui_port", cfg.tracking.ui_port)
    for service in wanted:
        if service.name in ports and _port_answers(host, ports[service.name][1]):
            setting, port = ports[service.name]
            raise RecFoundError(
                f"{host}:{port} is in use by another process, not one of this repository's "
                f"`recfound serve`: stop it, or set {setting} to a free port"
            )


def ready_message(cfg: Config, api_url: str) -> str:
    """Where everything is and how to start a run from another shell."""
    host = cfg.orchestration.host
    uri = tracking_uri(cfg)
    ui = (
        ""
        if uri.startswith(("http://", "https://"))
        else f" (UI http://{host}:{cfg.tracking.ui_port})"
    )
    return (
        f"Prefect UI  http://{host}:{cfg.orchestration.prefect_port}\n"
        f"MLflow      {uri}{ui}\n"
        f"In another shell:  export PREFECT_API_URL={api_url}\n"
        "                   prefect deployment run recfound/train\n"
        "Ctrl-C stops everything."
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_all(cfg: Config) -> None:
    """Start every service, wait until interrupted or a child exits, then stop them all."""
    root = Path.cwd()
    if not (root / "dvc.yaml").is_file():
        raise RecFoundError(f"{root}: no dvc.yaml here; run `recfound serve` in the repository")
    # flow runs call `dvc` and `recfound`: this environment's scripts come first on PATH
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = {**os.environ, **prefect_env(cfg, root), "PATH": path}
    log_dir = root / PREFECT_DIR / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[Service] = []
    # Ctrl-C and SIGTERM both end the wait below; SIGINT explicitly, because a process
    # started in the background may have inherited it ignored
    previous = {
        sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        take_over(root, cfg.orchestration.stop_timeout_s)
        wanted = services(cfg, root)
        check_ports_free(cfg, wanted)
        # independent services start together; the deployments need the Prefect API
        for wave in (
            [s for s in wanted if not s.needs_prefect],
            [s for s in wanted if s.needs_prefect],
        ):
            for service in wave:
                print(f"starting {service.name}: {' '.join(service.cmd)}", flush=True)
                start(service, env, log_dir)
                started.append(service)
                write_record(root, started)
            for service in wave:
                wait_healthy(service, cfg.orchestration.health_timeout_s)
                print(
                    f"  {service.name} ready ({service.health_url}); log {service.log}", flush=True
                )
        print(ready_message(cfg, env["PREFECT_API_URL"]), flush=True)
        while all(s.proc is not None and s.proc.poll() is None for s in started):
            time.sleep(1.0)
        dead = next(s for s in started if s.proc is not None and s.proc.poll() is not None)
        raise RecFoundError(
            f"{dead.name} exited with status {dead.proc.returncode}; log {dead.log}:\n"
            f"{_tail(dead.log)}"
        )
    except KeyboardInterrupt:
        print("stopping ...")
    finally:
        # a second Ctrl-C must not cut the shutdown short and orphan a server (it is bounded:
        # SIGKILL after orchestration.stop_timeout_s per service)
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        stop(started, cfg.orchestration.stop_timeout_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
