"""One writer per workspace: an OS file lock per writer, and a first-come queue for flow runs.

Two processes writing one working tree corrupt it: a `recfound stage train` orphaned by a
killed `dvc repro` and the next `dvc repro`'s train would both append to steps.jsonl and
write checkpoints. Hence:

- `hold(path, ...)`: an exclusive `flock` on a lock file. The OS releases it when the holder
  dies, however it dies (SIGKILL included), so a dead holder never wedges the workspace.
  After acquiring, the holder writes who it is (pid, host, process start time, owner,
  command) into the file; a second process waits, saying who holds it, and after its wait
  refuses with WorkspaceBusy naming the holder. The file's contents only describe the
  holder: the lock itself decides, so details left by a dead holder mean nothing.
- `stage_lock(cfg, stage)`: what every `recfound stage` process holds: paths.stage_lock, and
  paths.workspace_lock unless the flow run that started it (an ancestor process) holds that.
  So a stage of a direct `dvc repro` waits for a flow run's turn to end, then refuses.
- `queue_turn(...)` / `workspace_turn(cfg, ...)`: a flow run's turn at the workspace
  (paths.workspace_lock), granted in submission order. Each waiting run leaves a ticket in
  paths.workspace_queue named by its order key (submission time, then id) and holding its
  pid; a run takes the lock only when its ticket is the first of the live ones, and no
  direct `dvc repro` is at work in the repository (`dvc_at_work`: DVC's repository lock, or
  its rwlock naming a live process; between its stages no stage lock is held, so the stage
  lock alone would not tell). It logs who holds the workspace while it waits. Tickets of dead
  processes are removed.

A process that holds a lock may enter it again (a flow run that runs another flow as its
subflow): flock would otherwise make it wait on itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from recfound import processes
from recfound.config import Config
from recfound.errors import RecFoundError

Notify = Callable[[str], None]
# How often a waiter tries the lock again: cheap (one syscall), and keeps hand-overs quick.
RETRY_S = 0.1
# Order keys sort as text: UTC time with microseconds, then the id (characters safe in names)
_ORDER_TIME = "%Y%m%dT%H%M%S.%fZ"
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]")
TICKET_SUFFIX = ".json"
DVC_TMP = Path(".dvc") / "tmp"  # DVC's repository lock and rwlock live here

# Locks this process holds: resolved path -> depth of nesting.
_held: dict[Path, int] = {}


@dataclass(frozen=True)
class Holder:
    """A process that holds (or waits for) a lock, as it describes itself."""

    pid: int
    host: str
    started: float | None  # the process's start time (epoch s): with pid, its identity
    owner: str  # what it is, e.g. "stage train" or "flow run 1b2c…"
    command: str
    since: float  # when it took the lock (or queued)

    @classmethod
    def this_process(cls, owner: str) -> Holder:
        argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv else []
        return cls(
            pid=os.getpid(),
            host=socket.gethostname(),
            started=processes.start_time(os.getpid()),
            owner=owner,
            command=" ".join(argv),
            since=time.time(),
        )

    def alive(self) -> bool:
        """True while this process runs; a process on another host is assumed to."""
        return self.host != socket.gethostname() or processes.alive(self.pid, self.started)

    def describe(self) -> str:
        """`pid N (stage train, started 2026-…)`, the host added when it is not this one."""
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"pid {self.pid}{where} ({self.owner}, started {processes.local_time(self.started)})"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        """The holder `text` describes; None when it is empty or not a holder record."""
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError):
            return None


class WorkspaceBusy(RecFoundError):
    """Another process held the workspace lock for longer than this one would wait."""

    def __init__(self, path: Path, holder: Holder | None, waited_s: float, setting: str) -> None:
        self.path, self.holder = path, holder
        who = holder.describe() if holder else "a process that has not yet said who it is"
        super().__init__(
            f"{path} is held by {who}: another process is writing this workspace; "
            f"gave up after {waited_s:g} s ({setting}): let it finish or stop it"
        )


def read_holder(path: Path) -> Holder | None:
    """Who the lock file says holds it, if that process still lives (else None).

    Only meaningful while the lock is taken: the file may describe a holder that is gone.
    """
    try:
        holder = Holder.from_json(Path(path).read_text(encoding="utf-8"))
    except OSError:
        return None
    return holder if holder is not None and holder.alive() else None


def _try_lock(path: Path, holder: Holder) -> int | None:
    """The locked file descriptor of `path` with `holder` written in, or None if it is taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # no O_TRUNC: the current holder's details stay readable until the lock is ours
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder.to_json().encode(), 0)
    return fd


def _unlock(fd: int) -> None:
    # clear the details first, so they never outlive a holder that let go in order
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


@contextmanager
def _reentered(path: Path) -> Iterator[bool]:
    """True (and counted) if this process holds `path` already."""
    key = path.resolve()
    if key not in _held:
        yield False
        return
    _held[key] += 1
    try:
        yield True
    finally:
        _held[key] -= 1


@contextmanager
def _owning(path: Path, fd: int) -> Iterator[None]:
    key = path.resolve()
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        _unlock(fd)


@contextmanager
def hold(
    path: str | Path,
    owner: str,
    wait_s: float,
    notice_s: float,
    notify: Notify,
    setting: str = "the wait",
) -> Iterator[None]:
    """Hold the exclusive lock `path` for the body; wait up to `wait_s` for it.

    While waiting, `notify` gets `waiting for <path>: held by pid N (…)` at most every
    `notice_s`; after `wait_s` WorkspaceBusy names the holder (`setting`: the config key
    of the wait, for the message).
    """
    path = Path(path)
    with _reentered(path) as again:
        if again:
            yield
            return
        me = Holder.this_process(owner)
        start = time.monotonic()
        next_notice = start
        while (fd := _try_lock(path, me)) is None:
            now = time.monotonic()
            if now - start >= wait_s:
                raise WorkspaceBusy(path, read_holder(path), wait_s, setting)
            if now >= next_notice:
                holder = read_holder(path)
                who = holder.describe() if holder else "a process that has not yet said who it is"
                notify(f"waiting for {path}: held by {who}")
                next_notice = now + notice_s
            time.sleep(min(RETRY_S, max(0.0, start + wait_s - now)))
        with _owning(path, fd):
            yield


def is_launch_leader() -> bool:
    """False in ranks > 0 of a multi-process launch (torchrun, accelerate launch): the launch
    is one writer, and rank 0 holds the lock for it (the others would wait on rank 0, which
    waits on them)."""
    return os.environ.get("RANK", "0") == "0"


def held_by_ancestor(path: str | Path) -> bool:
    """Whether the lock `path` is held by a process this one descends from (a flow run's stage:
    flow run -> dvc -> [sh ->] recfound stage)."""
    holder = read_holder(Path(path))
    return holder is not None and holder.pid in processes.ancestors(os.getpid())


@contextmanager
def stage_lock(cfg: Config, stage: str, notify: Notify) -> Iterator[None]:
    """What stage process `stage` holds, each waited for as configured: the workspace lock
    (unless the flow run it belongs to holds it) and the stage lock."""
    if not is_launch_leader():
        yield
        return
    locks = [cfg.paths.stage_lock]
    if not held_by_ancestor(cfg.paths.workspace_lock):
        locks.insert(0, cfg.paths.workspace_lock)
    with ExitStack() as held:
        for path in locks:
            held.enter_context(
                hold(
                    path,
                    f"stage {stage}",
                    cfg.workspace.stage_wait_s,
                    cfg.workspace.wait_notice_s,
                    notify,
                    setting="workspace.stage_wait_s",
                )
            )
        yield


def dvc_at_work(repo: str | Path = ".") -> str | None:
    """The DVC process at work in `repo` (`dvc repro train` (pid N) since …), or None.

    DVC holds its repository lock (.dvc/tmp/lock, an flock) for a whole command except while
    a stage's cmd runs; then its rwlock file names the command and pid that holds the stage's
    outputs. Probing the lock takes it for an instant: a DVC process starting just then
    retries (it waits for its lock a few seconds).
    """
    tmp = Path(repo) / DVC_TMP
    for infos in _rwlock_holders(tmp / "rwlock"):
        pid = infos.get("pid")
        if isinstance(pid, int) and processes.alive(pid, None) and pid != os.getpid():
            return _dvc_description(pid, str(infos.get("cmd") or "dvc"))
    pid = _repo_lock_holder(tmp / "lock")
    return None if pid is None else _dvc_description(pid, _command_of(pid))


def _command_of(pid: int) -> str:
    """Process `pid`'s command as a person typed it (`dvc repro`, not `python .../dvc repro`)."""
    argv = processes.command_line(pid)
    if argv and Path(argv[0]).name.startswith("python"):
        argv = argv[1:]
    return " ".join([Path(argv[0]).name, *argv[1:]]) if argv else "dvc"


def _dvc_description(pid: int, command: str) -> str:
    since = processes.local_time(processes.start_time(pid))
    return f"`{command}` (pid {pid}) since {since}"


def _rwlock_holders(path: Path) -> list[dict]:
    """Every (pid, cmd) DVC's rwlock file lists, writers and readers; [] when unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    if not isinstance(doc, dict):
        return []
    found = list((doc.get("write") or {}).values())
    for readers in (doc.get("read") or {}).values():
        found.extend(readers if isinstance(readers, list) else [])
    return [info for info in found if isinstance(info, dict)]


def _repo_lock_holder(path: Path) -> int | None:
    """The pid holding DVC's repository lock (0 when it does not say), or None if it is free."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else 0
    finally:
        os.close(fd)  # closing releases our probe's lock
    return None


def order_key(submitted: datetime, run_id: str) -> str:
    """A queue position that sorts as text: submission time (UTC), then `run_id`."""
    when = submitted.astimezone(UTC) if submitted.tzinfo else submitted.replace(tzinfo=UTC)
    return f"{when.strftime(_ORDER_TIME)}_{_UNSAFE_IN_NAME.sub('-', run_id)}"


def live_tickets(queue_dir: Path) -> list[tuple[str, Holder]]:
    """(order key, waiter) of every ticket in `queue_dir` in queue order; removes the tickets of
    dead processes (and unreadable ones: tickets are written whole, by rename)."""
    live = []
    for ticket in sorted(queue_dir.glob(f"*{TICKET_SUFFIX}")):
        try:
            waiter = Holder.from_json(ticket.read_text(encoding="utf-8"))
        except FileNotFoundError:  # its run got its turn meanwhile, or gave up
            continue
        if waiter is None or not waiter.alive():
            ticket.unlink(missing_ok=True)
            continue
        live.append((ticket.name.removesuffix(TICKET_SUFFIX), waiter))
    return live


def _write_ticket(queue_dir: Path, key: str, waiter: Holder) -> Path:
    queue_dir.mkdir(parents=True, exist_ok=True)
    ticket = queue_dir / f"{key}{TICKET_SUFFIX}"
    temp = queue_dir / f".{key}.{os.getpid()}.tmp"  # not *.json: never read half-written
    temp.write_text(waiter.to_json(), encoding="utf-8")
    os.replace(temp, ticket)
    return ticket


def _queue_report(lock_path: Path, ahead: list[tuple[str, Holder]]) -> str:
    holder = read_holder(lock_path)
    held = "free"
    if holder is not None:
        since = processes.local_time(holder.since)
        held = f"held by {holder.owner} (pid {holder.pid}) since {since}"
    queued = f"{len(ahead)} run{'s' if len(ahead) != 1 else ''} ahead of this one"
    if ahead:
        queued += f" (next: {ahead[0][1].owner}, pid {ahead[0][1].pid})"
    return f"waiting for the workspace ({lock_path}): {held}; {queued}"


@contextmanager
def queue_turn(
    lock_path: str | Path,
    queue_dir: str | Path,
    submitted: datetime,
    run_id: str,
    owner: str,
    log: Notify,
    poll_s: float,
    log_s: float,
    busy: Callable[[], str | None] | None = None,
) -> Iterator[None]:
    """Wait for this run's turn at the workspace (first come, first served), then hold it.

    The run queues a ticket under `order_key(submitted, run_id)`; it takes the lock when no
    live ticket sorts before its own, the lock is free, and `busy` (someone at work outside
    the queue, described) says None. While waiting, `log` gets who holds the workspace and
    how many runs are ahead, at once and then every `log_s`.
    """
    lock_path, queue_dir = Path(lock_path), Path(queue_dir)
    with _reentered(lock_path) as again:
        if again:
            yield
            return
        me = Holder.this_process(owner)
        key = order_key(submitted, run_id)
        ticket = _write_ticket(queue_dir, key, me)
        next_log = time.monotonic()
        waited = False
        try:
            while True:
                ahead = [t for t in live_tickets(queue_dir) if t[0] < key]
                report = _queue_report(lock_path, ahead)
                if not ahead and (fd := _try_lock(lock_path, me)) is not None:
                    other = busy() if busy is not None else None
                    if other is None:
                        break
                    _unlock(fd)  # someone outside the queue is at work: let them finish
                    report = f"waiting for the workspace ({lock_path}): held by {other}"
                if time.monotonic() >= next_log:
                    log(report)
                    next_log = time.monotonic() + log_s
                time.sleep(poll_s)
                waited = True
        finally:
            ticket.unlink(missing_ok=True)
        if waited:  # the log said it waits: say when that ended
            log(f"the workspace is this run's now ({lock_path})")
        with _owning(lock_path, fd):
            yield


@contextmanager
def workspace_turn(cfg: Config, submitted: datetime, run_id: str, log: Notify) -> Iterator[None]:
    """A flow run's turn at the workspace (paths.workspace_lock / workspace_queue)."""
    with queue_turn(
        cfg.paths.workspace_lock,
        cfg.paths.workspace_queue,
        submitted,
        run_id,
        f"flow run {run_id}",
        log,
        cfg.workspace.queue_poll_s,
        cfg.workspace.queue_log_s,
        busy=dvc_at_work,
    ):
        yield
