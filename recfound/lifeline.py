"""A stage process ends with the process that launched it, and ends cleanly on SIGTERM.

`dvc repro` runs a stage's cmd as `$SHELL -c "<cmd>"` (dvc/stage/run.py). bash executes a
lone command in place, so the stage's parent is the dvc process itself; dash (/bin/sh on
Debian, what DVC uses when SHELL is unset) stays in between as the parent. When dvc is killed
outright (SIGKILL, the OOM killer) nothing tells the stage: as an orphan it would go on
writing the workspace while the next `dvc repro` starts the same stage again. So, at stage
start (`tied_to_launcher`, Linux):

- the kernel is asked to send SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG);
- when the parent is a `sh -c` wrapper, the launcher is the shell's parent, whose death the
  kernel does not report to us: a daemon thread checks every `poll_s` that it still runs;
- the parent may have died before the prctl call: the launcher seen when this module was
  imported (the CLI imports it first thing) must still run after it, or the stage stops;
- SIGTERM raises StageTerminated in the main thread, so the stage unwinds (the MLflow run
  is closed, the workspace lock released) and training's atomic checkpoints keep the last
  complete one. A second SIGTERM kills at once.

Elsewhere (no prctl) only the SIGTERM handler is installed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from recfound import processes
from recfound.errors import StageTerminated

PR_SET_PDEATHSIG = 1  # linux/prctl.h
GROUP_POLL_S = 0.1  # how often stopping commands are checked for
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "ksh", "mksh", "fish"})


@dataclass(frozen=True)
class Launcher:
    """Who started this process: its parent, and the launcher proper (the parent's parent
    when the parent is a `sh -c` wrapper)."""

    parent: int
    pid: int
    started: float | None

    @property
    def via_shell(self) -> bool:
        return self.pid != self.parent

    def alive(self) -> bool:
        return processes.alive(self.pid, self.started)

    def describe(self) -> str:
        shell = f", through shell {self.parent}" if self.via_shell else ""
        return f"pid {self.pid}{shell}"


def is_shell_wrapper(pid: int) -> bool:
    """True if process `pid` is a shell running a command string (`sh -c '…'`)."""
    argv = processes.command_line(pid)
    return bool(argv) and Path(argv[0]).name in SHELLS and "-c" in argv[1:]


def find_launcher() -> Launcher:
    """This process's launcher: the parent, or above it the first process that is not a
    `sh -c` wrapper."""
    parent = os.getppid()
    pid = parent
    while is_shell_wrapper(pid) and (above := processes.parent_pid(pid)) not in (None, 0):
        pid = above
    return Launcher(parent, pid, processes.start_time(pid))


# As early as the CLI allows: a launcher that dies before tied_to_launcher() is noticed there.
AT_IMPORT = find_launcher() if processes.has_proc() else None


def _raise_terminated(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise StageTerminated(f"terminated by {signal.Signals(signum).name}")


def _prctl() -> Callable[..., int] | None:
    """libc's prctl, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _set_parent_death_signal(signum: int) -> bool:
    """prctl(PR_SET_PDEATHSIG, signum) (0: none); False where it is not available."""
    prctl = _prctl()
    if prctl is None:
        return False
    if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return True


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A Popen preexec_fn that makes the child get `signum` (SIGTERM: a chance to stop in
    order) when its parent dies (Linux): the same kernel request as tied_to_launcher's, made
    for a child we start (the flow's dvc, `recfound serve`'s services).

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits: the caller must fork
    and wait in the same thread (so that thread outlives the child unless the whole process
    dies, which is the point). None where prctl is unavailable. libc is looked up here, in the
    parent: the forked child of a threaded process should do as little as possible.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent, death_signal = os.getpid(), int(signum)

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, death_signal)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def end_with_parent(poll_s: float, grace_s: float) -> threading.Event:
    """Once this process's parent has ended (checked every `poll_s` from a daemon thread), stop
    the commands it runs and exit; set the returned event to stop watching.

    For a flow run's process, whose runner forks it from a worker thread of its event loop
    (PR_SET_PDEATHSIG follows the forking *thread*, so the kernel cannot be asked). Nothing is
    asked of Prefect: its engine, on SIGTERM, reports to a server that went down with the
    runner and retries for minutes. So the watch itself stops the commands (`stop_commands`:
    the children leading a process group of their own, i.e. the flow's `dvc repro`, whose
    stage follows it), gives them `grace_s`, and exits; the next serve marks the run Crashed.
    """
    parent = os.getppid()
    launcher = Launcher(parent, parent, processes.start_time(parent))
    stop = threading.Event()

    def stop_then_exit() -> None:
        stop_commands(grace_s)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(
        target=_watch,
        args=(launcher, poll_s, stop, stop_then_exit),
        name="parent-watch",
        daemon=True,
    ).start()
    return stop


def stop_commands(grace_s: float) -> None:
    """SIGTERM each child of this process that leads a process group of its own (a command
    started with start_new_session), and SIGKILL whatever of those groups outlives `grace_s`."""
    groups = [pid for pid in processes.children(os.getpid()) if processes.group_of(pid) == pid]
    for pid in groups:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(map(processes.group_alive, groups)) and time.monotonic() < deadline:
        time.sleep(GROUP_POLL_S)
    for pid in groups:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)


def _watch(
    launcher: Launcher,
    poll_s: float,
    stop: threading.Event,
    then: Callable[[], None] = _sigterm_self,
) -> None:
    """Call `then` (default: SIGTERM to this process) once `launcher` has ended."""
    while not stop.wait(poll_s):
        if not launcher.alive():
            then()
            return


@contextmanager
def tied_to_launcher(poll_s: float, launcher: Launcher | None = None) -> Iterator[Launcher | None]:
    """For the body: SIGTERM raises StageTerminated, and the death of the launcher (default:
    the one seen at import) sends SIGTERM; see the module docstring. Raises StageTerminated at
    once if the launcher is gone already. Undone afterwards (the CLI may run in a test).
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("tied_to_launcher: signal handlers can only be set in the main thread")
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    stop = threading.Event()
    launcher = launcher or AT_IMPORT
    told = launcher is not None and _set_parent_death_signal(signal.SIGTERM)
    try:
        # the parent or the launcher may have died before the kernel was asked to tell us
        if told and (os.getppid() != launcher.parent or not launcher.alive()):
            raise StageTerminated(f"its launcher ({launcher.describe()}) has ended")
        if told and launcher.via_shell:
            watch = threading.Thread(
                target=_watch, args=(launcher, poll_s, stop), name="launcher-watch", daemon=True
            )
            watch.start()
        yield launcher
    finally:
        stop.set()
        if told:
            _set_parent_death_signal(0)
        signal.signal(signal.SIGTERM, previous)
