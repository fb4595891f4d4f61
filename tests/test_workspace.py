"""One writer per workspace: the stage lock, the flow runs' queue, a stage's lifeline.

The lock and queue tests use real processes (the lock is the OS's flock, the queue's tickets
name pids); the lifeline tests kill a real launcher. The last test is the whole story on the
tiny model with real DVC: `dvc repro` killed mid-train, then run again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from repo_helpers import git

from recfound import lifeline, locks, processes
from recfound.errors import StageTerminated

PYTHON = sys.executable
ROOT = Path(__file__).resolve().parents[1]
# A stage left running after the kill is either still there KILL_GRACE_S later or has
# finished training (~0.1 s a step on 2 cores): either fails the test.
KILL_TEST_STEPS = 48
KILL_GRACE_S = 8

HOLD_SCRIPT = """
import sys, time
from recfound.locks import hold
with hold(sys.argv[1], "stage train", 0, 1, print):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def start_holder(tmp_path: Path, lock: Path, seconds: float = 60) -> subprocess.Popen:
    """A process holding `lock` as `stage train`, once it says so."""
    script = tmp_path / "hold.py"
    script.write_text(HOLD_SCRIPT, encoding="utf-8")
    proc = subprocess.Popen(
        [PYTHON, str(script), str(lock), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_waits_saying_who_holds_the_lock_then_refuses_naming_it(tmp_path):
    lock = tmp_path / ".recfound" / "stage.lock"
    holder = start_holder(tmp_path, lock)
    started = processes.local_time(processes.start_time(holder.pid))
    notices: list[str] = []
    began = time.monotonic()
    try:
        with (
            pytest.raises(locks.WorkspaceBusy) as refused,
            locks.hold(lock, "stage merge", 1.5, 0.5, notices.append, "workspace.stage_wait_s"),
        ):
            pytest.fail("entered a lock another process holds")
    finally:
        holder.kill()
        holder.wait()
    waited = time.monotonic() - began
    message = str(refused.value)
    assert 1.5 <= waited < 5
    assert f"held by pid {holder.pid} (stage train, started {started})" in message
    assert "workspace.stage_wait_s" in message and "\n" not in message
    assert 2 <= len(notices) <= 4  # at most one per notice interval
    assert set(notices) == {
        f"waiting for {lock}: held by pid {holder.pid} (stage train, started {started})"
    }


def test_a_waiting_writer_gets_the_lock_when_the_holder_ends(tmp_path):
    lock = tmp_path / "stage.lock"
    holder = start_holder(tmp_path, lock, seconds=1)
    notices: list[str] = []
    with locks.hold(lock, "stage merge", 30, 5, notices.append):
        held_by = locks.read_holder(lock)
    assert len(notices) == 1 and f"held by pid {holder.pid}" in notices[0]  # it did wait
    assert holder.wait(timeout=10) == 0
    assert held_by is not None and held_by.pid == os.getpid() and held_by.owner == "stage merge"
    assert lock.read_text() == ""  # let go in order: no details left behind


def test_the_lock_of_a_killed_holder_is_free_at_once(tmp_path):
    lock = tmp_path / "stage.lock"
    holder = start_holder(tmp_path, lock)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert f'"pid": {holder.pid}' in lock.read_text()  # its details are still in the file
    assert locks.read_holder(lock) is None  # ... and name no live process
    with locks.hold(lock, "stage train", 0, 1, pytest.fail):  # no wait at all
        pass


def test_details_in_the_lock_file_do_not_make_a_holder(tmp_path):
    # Left by a holder that died, naming a process that lives: the flock alone decides.
    lock = tmp_path / "stage.lock"
    parent = locks.Holder(os.getppid(), socket.gethostname(), None, "stage train", "x", 0.0)
    lock.write_text(parent.to_json())
    assert locks.read_holder(lock) == parent  # what the file says is a live process
    with locks.hold(lock, "stage merge", 0, 1, pytest.fail):
        assert locks.read_holder(lock).pid == os.getpid()


def test_a_process_may_enter_a_lock_it_holds(tmp_path):
    lock = tmp_path / "workspace.lock"
    with locks.hold(lock, "flow run a", 0, 1, pytest.fail):
        with locks.hold(lock, "flow run b", 0, 1, pytest.fail):
            pass
        assert locks.read_holder(lock).owner == "flow run a"  # the outer hold goes on


QUEUE_SCRIPT = """
import sys, time
from datetime import datetime
from pathlib import Path
from recfound.locks import queue_turn
lock, queue, submitted, name, out, until = sys.argv[1:7]
with queue_turn(lock, queue, datetime.fromisoformat(submitted), name, f"flow run {name}",
                lambda line: print(line, flush=True), poll_s=0.05, log_s=0.5):
    with open(out, "a") as handle:
        handle.write(name + "\\n")
    print("held", flush=True)
    while not Path(until).exists():  # hold until told to let go
        time.sleep(0.05)
"""


def queue_waiter(tmp_path: Path, name: str, submitted: datetime, release: Path) -> subprocess.Popen:
    script = tmp_path / "queue.py"
    script.write_text(QUEUE_SCRIPT, encoding="utf-8")
    argv = [tmp_path / "ws.lock", tmp_path / "queue", submitted.isoformat(), name]
    return subprocess.Popen(
        [PYTHON, str(script), *map(str, argv), str(tmp_path / "order.txt"), str(release)],
        stdout=subprocess.PIPE,
        text=True,
    )


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_queued_flow_runs_get_the_workspace_in_submission_order(tmp_path):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    holder = queue_waiter(tmp_path, "holder", t0, release=tmp_path / "go")
    assert holder.stdout.readline().strip() == "held"
    # submitted a < b < c, but started c, b, a: arrival order is not the order served
    runs = {
        name: queue_waiter(tmp_path, name, t0 + timedelta(seconds=i), release=tmp_path / "go")
        for i, name in reversed(list(enumerate("abc", start=1)))
    }
    wait_until(lambda: len(list((tmp_path / "queue").glob("*.json"))) == 3)
    time.sleep(0.7)  # > log_s: each waiter logs the queue as it stands
    (tmp_path / "go").touch()
    logs = {name: proc.communicate(timeout=60)[0] for name, proc in runs.items()}
    holder.wait(timeout=30)
    assert (tmp_path / "order.txt").read_text().split() == ["holder", "a", "b", "c"]
    assert f"held by flow run holder (pid {holder.pid}) since " in logs["c"]
    assert f"2 runs ahead of this one (next: flow run a, pid {runs['a'].pid})" in logs["c"]
    assert "0 runs ahead of this one" in logs["a"]
    assert all("the workspace is this run's now" in log for log in logs.values())
    assert not list((tmp_path / "queue").glob("*.json"))  # every ticket gone


def test_the_ticket_of_a_killed_run_does_not_hold_up_the_queue(tmp_path):
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    holder = queue_waiter(tmp_path, "holder", t0, release=tmp_path / "go")
    assert holder.stdout.readline().strip() == "held"
    first = queue_waiter(tmp_path, "first", t0 + timedelta(seconds=1), release=tmp_path / "go")
    wait_until(lambda: len(list((tmp_path / "queue").glob("*.json"))) == 1)
    second = queue_waiter(tmp_path, "second", t0 + timedelta(seconds=2), release=tmp_path / "go")
    wait_until(lambda: len(list((tmp_path / "queue").glob("*.json"))) == 2)
    first.kill()
    first.wait()
    (tmp_path / "go").touch()
    second.communicate(timeout=60)
    holder.wait(timeout=30)
    assert (tmp_path / "order.txt").read_text().split() == ["holder", "second"]


def test_order_keys_sort_by_submission_time_then_id():
    t = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)
    keys = [
        locks.order_key(t + timedelta(microseconds=1), "a"),
        locks.order_key(t, "b"),
        locks.order_key(t.astimezone(), "a/../x"),  # same instant in another zone
    ]
    assert sorted(keys) == [keys[2], keys[1], keys[0]]
    assert "/" not in keys[2]


STAGE_SCRIPT = """
import sys, time
from recfound import lifeline
from recfound.errors import StageTerminated
out = sys.argv[1]
try:
    with lifeline.tied_to_launcher(poll_s=0.2) as launcher:
        with open(out, "w") as handle:
            handle.write(f"ready {launcher.pid} {launcher.via_shell}")
        time.sleep(60)
except StageTerminated:
    with open(out, "w") as handle:
        handle.write("terminated")
"""
LAUNCHER_SCRIPT = """
import subprocess, sys, time
subprocess.Popen(sys.argv[1:])
time.sleep(120)
"""


# --- direct `dvc repro` / `recfound stage` and flow runs: one workspace, both ways ---

FLOW_HOLD_SCRIPT = """
import subprocess, sys, time
from recfound.locks import hold
with hold(sys.argv[1], "flow run abc", 0, 1, print):
    # what a flow run's stage asks, started as dvc starts it: through `sh -c`
    check = "from recfound.locks import held_by_ancestor as h; import sys; print(h(sys.argv[1]))"
    child = subprocess.run(["sh", "-c", f'"{sys.executable}" -c "{check}" "{sys.argv[1]}"; true'],
                           capture_output=True, text=True)
    print("held", child.stdout.strip(), flush=True)
    time.sleep(float(sys.argv[2]))
"""


def start_flow_holder(tmp_path: Path, lock: Path, seconds: float = 60) -> tuple:
    """A process holding `lock` as `flow run abc`, and what its own child saw."""
    script = tmp_path / "flow_hold.py"
    script.write_text(FLOW_HOLD_SCRIPT, encoding="utf-8")
    proc = subprocess.Popen(
        [PYTHON, str(script), str(lock), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    said = proc.stdout.readline().split()
    assert said[0] == "held", said
    return proc, said[1]


def test_a_flow_runs_own_stage_passes_its_lock_and_a_direct_stage_refuses_in_one_line(tmp_path):
    """A direct `recfound stage` waits workspace.stage_wait_s for a flow run's workspace, then
    refuses in one line naming the run; the flow run's own stages (descendants) pass."""
    lock = tmp_path / ".recfound" / "workspace.lock"
    holder, child_saw = start_flow_holder(tmp_path, lock)
    try:
        assert child_saw == "True"  # the flow run's stage: its ancestor holds the workspace
        assert not locks.held_by_ancestor(lock)  # this test process is no descendant
        params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
        params["workspace"]["stage_wait_s"] = 1
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
        began = time.monotonic()
        done = subprocess.run(
            [str(Path(PYTHON).parent / "recfound"), "stage", "build"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        waited = time.monotonic() - began
    finally:
        holder.kill()
        holder.wait()
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 1, done.stderr
    assert len(errors) == 1, done.stderr
    assert f"held by pid {holder.pid} (flow run abc, started " in errors[0]
    assert "workspace.stage_wait_s" in errors[0]
    assert f"waiting for .recfound/workspace.lock: held by pid {holder.pid}" in done.stderr
    assert waited >= 1


def test_dvc_at_work_names_a_dvc_command_by_its_repository_lock_or_its_rwlock(tmp_path):
    import zc.lockfile  # what DVC locks its repository with (dvc.lock.Lock)

    tmp = tmp_path / ".dvc" / "tmp"
    tmp.mkdir(parents=True)
    assert locks.dvc_at_work(tmp_path) is None
    repo_lock = zc.lockfile.LockFile(str(tmp / "lock"))  # held by this process, as dvc does
    try:
        prober = subprocess.run(
            [
                PYTHON,
                "-c",
                f"from recfound.locks import dvc_at_work; print(dvc_at_work({str(tmp_path)!r}))",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        repo_lock.close()
    assert f"(pid {os.getpid()}) since " in prober.stdout
    assert locks.dvc_at_work(tmp_path) is None  # released
    # while a stage's cmd runs, DVC lets go of its lock; its rwlock names the command
    stage = subprocess.Popen(["sleep", "60"])
    try:
        rwlock = {"write": {"artifacts/unified": {"pid": stage.pid, "cmd": "dvc repro build"}}}
        (tmp / "rwlock").write_text(json.dumps(rwlock), encoding="utf-8")
        described = locks.dvc_at_work(tmp_path)  # the command as DVC recorded it
        assert described.startswith(f"`dvc repro build` (pid {stage.pid}) since ")
    finally:
        stage.kill()
        stage.wait()
    assert locks.dvc_at_work(tmp_path) is None  # a dead pid in the rwlock holds nothing


def test_a_queued_flow_run_waits_while_someone_outside_the_queue_is_at_work(tmp_path):
    at_work = ["`dvc repro train` (pid 7) since 10:00", "`dvc repro train` (pid 7) since 10:00"]
    lines: list[str] = []
    with locks.queue_turn(
        tmp_path / "ws.lock",
        tmp_path / "queue",
        datetime(2026, 1, 1, tzinfo=UTC),
        "run",
        "flow run run",
        lines.append,
        poll_s=0.01,
        log_s=0,
        busy=lambda: at_work.pop() if at_work else None,
    ):
        assert locks.read_holder(tmp_path / "ws.lock").owner == "flow run run"
    waiting = f"waiting for the workspace ({tmp_path / 'ws.lock'}): held by `dvc repro train`"
    assert [line.startswith(waiting) for line in lines] == [True, True, False]
    assert lines[-1].startswith("the workspace is this run's now")


@pytest.mark.skipif(not processes.has_proc(), reason="Linux: prctl and /proc")
@pytest.mark.parametrize("via_shell", [False, True], ids=["parent", "behind-sh-c"])
def test_a_stage_ends_cleanly_when_its_launcher_is_killed(tmp_path, via_shell):
    (tmp_path / "stage.py").write_text(STAGE_SCRIPT, encoding="utf-8")
    (tmp_path / "launcher.py").write_text(LAUNCHER_SCRIPT, encoding="utf-8")
    out = tmp_path / "out.txt"
    stage = [PYTHON, str(tmp_path / "stage.py"), str(out)]
    if via_shell:  # two commands: no shell may exec the stage in its own place
        stage = ["/bin/sh", "-c", f"{' '.join(stage)}; exit $?"]
    launcher = subprocess.Popen([PYTHON, str(tmp_path / "launcher.py"), *stage])
    wait_until(lambda: out.exists() and out.read_text().startswith("ready"))
    assert out.read_text() == f"ready {launcher.pid} {via_shell}"
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    wait_until(lambda: out.read_text() == "terminated", timeout=5)


def test_a_stage_whose_launcher_died_before_it_was_tied_stops_at_once():
    gone = subprocess.Popen([PYTHON, "-c", "pass"])
    started = processes.start_time(gone.pid)
    gone.wait()
    launcher = lifeline.Launcher(parent=os.getppid(), pid=gone.pid, started=started)
    handler = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StageTerminated), lifeline.tied_to_launcher(0.1, launcher):
        pytest.fail("the stage ran on after its launcher had died")
    assert signal.getsignal(signal.SIGTERM) is handler  # undone afterwards


ORPHAN_CHILD = """
import subprocess, sys, time
from recfound.lifeline import end_with_parent
stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
command = subprocess.Popen([sys.executable, "-c", stubborn], start_new_session=True)
end_with_parent(0.1, 1.0)
print(command.pid, flush=True)
time.sleep(60)
"""
ORPHAN_PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, sys.argv[1]])
print(child.pid, flush=True)
child.wait()
"""


@pytest.mark.skipif(not processes.has_proc(), reason="Linux: /proc")
def test_a_process_tied_by_end_with_parent_stops_its_commands_and_exits_when_the_parent_dies(
    tmp_path,
):
    """A flow run's process when its runner dies: its command (its own process group, here one
    that ignores SIGTERM) is stopped, SIGKILLed after the grace, and the process exits."""
    (tmp_path / "child.py").write_text(ORPHAN_CHILD, encoding="utf-8")
    (tmp_path / "parent.py").write_text(ORPHAN_PARENT, encoding="utf-8")
    parent = subprocess.Popen(
        [PYTHON, str(tmp_path / "parent.py"), str(tmp_path / "child.py")],
        stdout=subprocess.PIPE,
        text=True,
    )
    child, command = int(parent.stdout.readline()), int(parent.stdout.readline())
    assert processes.group_of(command) == command
    began = time.monotonic()
    parent.kill()
    parent.wait()
    wait_until(lambda: not processes.alive(child, None) and not processes.alive(command, None))
    gone_after = time.monotonic() - began
    assert 1.0 <= gone_after < 5  # the grace (1 s), then SIGKILL: not at once, not for long


def stage_processes(repo: Path) -> list[int]:
    """Pids of the `recfound stage` processes (and their `sh -c` wrappers) working in `repo`."""
    found = []
    for entry in processes.PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        argv = " ".join(processes.command_line(int(entry.name)))
        if cwd == repo and "recfound stage" in argv and processes.alive(int(entry.name), None):
            found.append(int(entry.name))
    return found


def train_log_steps(repo: Path) -> list[int]:
    lines = (repo / "reports/train/steps.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines]


@pytest.mark.skipif(not processes.has_proc(), reason="Linux: prctl and /proc")
def test_a_killed_dvc_repro_leaves_no_writer_and_the_next_one_ends_as_if_uninterrupted(
    tmp_path, tiny_model_dir
):
    from test_flows import SCRIPTS, make_pipeline_repo

    repo = make_pipeline_repo(tmp_path / "repo", tiny_model_dir, {"prefect": 1, "mlflow": 2})
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(steps=KILL_TEST_STEPS, save_every=4)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "commit", "-q", "-am", f"train {KILL_TEST_STEPS} steps")
    # SHELL=/bin/sh: DVC runs the cmd through dash, which stays between dvc and the stage
    env = {
        **os.environ,
        "PATH": f"{SCRIPTS}{os.pathsep}{os.environ['PATH']}",  # `recfound` for the stage cmds
        "SHELL": "/bin/sh",
        "OMP_NUM_THREADS": "1",
        "TQDM_DISABLE": "1",
    }
    dvc = [str(SCRIPTS / "dvc"), "repro", "train"]
    log = repo / "reports/train/steps.jsonl"

    output = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(dvc, cwd=repo, env=env, stdout=output, stderr=subprocess.STDOUT)

    def mid_train() -> bool:
        assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
        return log.is_file() and len(log.read_text().splitlines()) >= 6  # a checkpoint or more

    wait_until(mid_train, timeout=300)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic()
    wait_until(lambda: not stage_processes(repo), timeout=KILL_GRACE_S)
    print(f"no stage process left {time.monotonic() - killed_at:.1f} s after the kill")
    assert not (repo / "artifacts/adapter").exists(), "the stage trained on after dvc died"

    second = subprocess.run(dvc, cwd=repo, env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert train_log_steps(repo) == list(range(1, KILL_TEST_STEPS + 1))
    resumed = {p.name: p.read_bytes() for p in (repo / "artifacts/adapter").iterdir()}
    resumed_log = log.read_text()

    # the same training, uninterrupted
    shutil.rmtree(repo / "artifacts/checkpoints")
    shutil.rmtree(repo / "reports/train")
    reference = subprocess.run(
        [*dvc, "--force", "--single-item"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert reference.returncode == 0, reference.stdout[-3000:] + reference.stderr[-3000:]
    assert resumed == {p.name: p.read_bytes() for p in (repo / "artifacts/adapter").iterdir()}
    assert resumed_log == log.read_text()
