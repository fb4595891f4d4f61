"""What the OS says about a process: its start time, parent and command line (Linux /proc).

A pid alone does not name a process: pids are reused. A process is therefore identified by
its pid *and* its start time, so a lock's holder info or a queue ticket left behind by a dead
process is never mistaken for a live one that happens to get the same pid.
Without /proc (not Linux) start times are unknown and liveness falls back to the pid alone.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

PROC = Path("/proc")
# Start times are derived from the boot time, which the kernel reports in whole seconds and
# may restate by a second after a clock adjustment; pid reuse within that margin is not a risk.
START_TOLERANCE_S = 2.0
EXITED_STATES = ("Z", "X")


@functools.cache
def _boot_time() -> float:
    for line in (PROC / "stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise OSError("/proc/stat has no btime line")


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 on (state), or None when there is no such process."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # field 2, the command name, may hold spaces and parentheses: split after its last ')'
    return text.rsplit(")", 1)[1].split()


def has_proc() -> bool:
    """True where /proc describes processes (Linux)."""
    return (PROC / "self" / "stat").is_file()


def start_time(pid: int) -> float | None:
    """When process `pid` started (epoch seconds); None if there is none or it has exited."""
    fields = _stat_fields(pid)
    # a zombie (Z) or dead (X) process has exited: its files and locks are closed already
    if fields is None or fields[0] in EXITED_STATES:
        return None
    ticks = int(fields[19])  # field 22: start time in clock ticks after boot
    return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")


def parent_pid(pid: int) -> int | None:
    """The parent of process `pid` (field 4 of /proc/<pid>/stat), or None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields is not None else None


def ancestors(pid: int) -> list[int]:
    """The parent of process `pid`, its parent, and so on up to (not including) pid 0."""
    found: list[int] = []
    while (pid := parent_pid(pid) or 0) > 0 and pid not in found:
        found.append(pid)
    return found


def group_of(pid: int) -> int | None:
    """The process group of process `pid` (field 5 of /proc/<pid>/stat), None if it is gone."""
    fields = _stat_fields(pid)
    return int(fields[2]) if fields is not None else None


def children(pid: int) -> list[int]:
    """The live children of process `pid` (Linux /proc; [] elsewhere)."""
    if not has_proc():
        return []
    found = []
    for stat in PROC.glob("[0-9]*/stat"):
        fields = _stat_fields(int(stat.parent.name))
        if fields is not None and fields[0] not in EXITED_STATES and int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def command_line(pid: int) -> list[str]:
    """The argv of process `pid`; empty when it is gone or unreadable."""
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _answers_signal_zero(send: Callable[[int, int], None], target: int) -> bool:
    """Whether `send(target, 0)` (os.kill or os.killpg) finds the process (group)."""
    try:
        send(target, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _pid_exists(pid: int) -> bool:
    return _answers_signal_zero(os.kill, pid)


def alive(pid: int, started: float | None) -> bool:
    """True while the process `pid` that started at `started` runs (None: any start time)."""
    if not has_proc():
        return _pid_exists(pid)
    now = start_time(pid)
    if now is None:
        return False
    return started is None or abs(now - started) <= START_TOLERANCE_S


def local_time(epoch_s: float | None) -> str:
    """`epoch_s` as local ISO time to the second, for messages; '?' when unknown."""
    if epoch_s is None:
        return "?"
    return datetime.fromtimestamp(epoch_s).astimezone().isoformat(timespec="seconds")


def group_alive(pgid: int) -> bool:
    """Whether a live (not exited) process of process group `pgid` remains. Zombies do not
    count: an orphan waits for init to reap it, which a container's init may never do."""
    if not _answers_signal_zero(os.killpg, pgid):
        return False
    if not has_proc():
        return True
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            state, _, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue  # gone while we looked
        if int(group) == pgid and state not in EXITED_STATES:
            return True
    return False
