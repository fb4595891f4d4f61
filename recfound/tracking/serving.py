"""`mlflow models serve` of a registered model on loopback, for tests and bench/serve.py.

The server is MLflow's own scoring server (uvicorn + FastAPI) in a child process of its own
session, so stopping it stops its workers too. It binds 127.0.0.1 only; `--env-manager local`
serves from the current environment (the model's requirements are those of this project).
`POST /invocations` answers with JSON: 200 and `{"predictions": [...]}`, or a 4xx/5xx and
`{"error_code": ..., "message": ...}`; `post_json` returns either, with its status.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
# Loading the model (torch, the base model, the index) takes seconds to minutes.
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Served:
    """A running server: its base URL and process."""

    url: str
    process: subprocess.Popen
    log: IO[bytes]  # the server's stdout + stderr: a file, as a pipe nobody reads would fill

    def output(self) -> str:
        """The last lines the server wrote."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    @property
    def invocations(self) -> str:
        return f"{self.url}/invocations"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def post_json(url: str, body: Mapping[str, Any], timeout: float = 60.0) -> tuple[int, Any]:
    """POST `body` as JSON; (HTTP status, strictly decoded JSON answer), error statuses
    included."""
    request = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, strict_json(response.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, strict_json(err.read() or b"null")


def _not_json(constant: str) -> None:
    raise ValueError(f"not JSON: {constant} (the answer must use null for a missing value)")


def strict_json(text: str | bytes) -> Any:
    """JSON as a strict client parses it: NaN / Infinity, which Python's json accepts by
    default but RFC 8259 does not, are errors."""
    return json.loads(text, parse_constant=_not_json)


def wait_until_ready(served: Served, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Return once GET /ping answers 200; RuntimeError with the server's output if it exits
    or does not answer in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        if served.process.poll() is not None:
            raise RuntimeError(f"mlflow models serve exited: {served.output()}")
        try:
            with urllib.request.urlopen(f"{served.url}/ping", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"mlflow models serve did not answer within {timeout_s:.0f} s: {served.output()}"
            )
        time.sleep(0.5)


@contextmanager
def serve_model(
    model_uri: str, env: Mapping[str, str] | None = None, port: int | None = None
) -> Iterator[Served]:
    """`mlflow models serve -m model_uri` on 127.0.0.1, ready when entered, stopped on exit.

    `env` is added to this process's environment (MLFLOW_TRACKING_URI for a `models:/` URI,
    OMP_NUM_THREADS for the server's threads)."""
    scripts = Path(sys.executable).parent
    port = port or free_port()
    child_env = {
        **os.environ,
        **(env or {}),
        # the server starts workers through executables of this environment
        "PATH": f"{scripts}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    command = [
        str(scripts / "mlflow"),
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        HOST,
        "-p",
        str(port),
    ]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            command, env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        served = Served(f"http://{HOST}:{port}", process, log)
        try:
            wait_until_ready(served)
            yield served
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=STOP_TIMEOUT_S)
