"""Disk full, read-only and permission faults: one readable line naming the path; durable writes.

The faults are simulated (an OSError raised where the OS would raise it), except the
permission case, which uses a real read-only directory where the user is not root.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest
import yaml
from safetensors import SafetensorError
from typer.testing import CliRunner

from recfound import atomic
from recfound.atomic import atomic_dir, atomic_file
from recfound.cli import DEBUG_ENV, app
from recfound.errors import StorageError, naming, setting_for, storage_errno

TRACEBACK = "Traceback (most recent call last)"


def enospc(*_args, **_kwargs):
    """What write/flush/close/fsync raise on a full disk: no file name."""
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# ------------------------------------------------------------------- the path is always named


def test_a_full_disk_while_writing_a_file_names_the_file_not_its_temp_sibling(tmp_path):
    target = tmp_path / "reports" / "metrics.json"
    with pytest.raises(StorageError) as caught, atomic_file(target) as handle:
        handle.write("{}")
        enospc()
    assert caught.value.errno == errno.ENOSPC
    assert caught.value.filename == str(target)
    assert str(target) in str(caught.value)
    assert list(target.parent.iterdir()) == []  # the temp file is gone too


def test_a_full_disk_inside_a_nested_directory_names_the_file_under_the_target(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "step-000016"
    # What safetensors raises on a full disk (seen on a 64 KiB tmpfs): no errno, no file name.
    full = SafetensorError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )
    with (
        pytest.raises(StorageError) as caught,
        atomic_dir(checkpoint) as tmp,
        atomic_dir(tmp / "adapter") as adapter,  # as adapter.save() inside save_checkpoint
        naming(adapter / "weights.safetensors"),
    ):
        raise full
    assert caught.value.filename == str(checkpoint / "adapter" / "weights.safetensors")
    assert list(checkpoint.parent.iterdir()) == []


def test_a_failed_rename_keeps_the_previous_output(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "old.txt").write_text("previous")
    real_replace = os.replace

    def read_only_for_the_new_one(src, dst):
        if Path(src).name.startswith(".out.tmp-"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(src), str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", read_only_for_the_new_one)
    with pytest.raises(StorageError) as caught, atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert caught.value.filename == str(target)
    assert (target / "old.txt").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_advice_names_the_setting_that_chose_the_path():
    settings = {"paths.reports": Path("reports"), "paths.train_metrics": Path("reports/train")}
    assert setting_for("reports/train/steps.jsonl", settings) == "paths.train_metrics"
    assert setting_for("reports/metrics.json", settings) == "paths.reports"
    assert setting_for("elsewhere/x", settings) is None


def test_only_space_and_permission_faults_are_storage_faults():
    assert storage_errno(PermissionError(errno.EACCES, "denied", "x")) == errno.EACCES
    assert storage_errno(OSError(errno.EDQUOT, "quota")) == errno.EDQUOT
    assert storage_errno(FileNotFoundError(errno.ENOENT, "missing", "x")) is None
    assert storage_errno(ValueError("No space left on device (os error 28)")) is None


# ------------------------------------------------------------------- durable: fsync file + dir


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """Every fsync and rename, in order: 'file', 'dir' or 'rename'."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def test_an_atomic_file_is_synced_before_its_rename_and_its_directory_after(tmp_path, synced):
    with atomic_file(tmp_path / "a.json") as handle:
        handle.write("{}")
    assert synced == ["file", "rename", "dir"]


def test_an_atomic_directory_syncs_its_files_and_entries_then_the_rename(tmp_path, synced):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "a.bin").write_bytes(b"a")
        (tmp / "b.json").write_text("{}")
    # two files, two directories (sub, the temp dir), then the rename and its parent
    assert synced == ["file", "dir", "file", "dir", "rename", "dir"]


# -------------------------------------------------------------------------- through the CLI


@pytest.fixture
def params(tmp_path) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"paths": {"data": str(tmp_path / "data")}}), encoding="utf-8")
    return path


def sample(params: Path, *options: str, env: dict[str, str] | None = None):
    """`recfound [options] data sample --params params` (writes paths.data)."""
    args = [*options, "data", "sample", "--params", str(params)]
    return CliRunner().invoke(app, args, env=env or {DEBUG_ENV: None})


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EROFS, "read-only file system"),
        (errno.EACCES, "permission denied"),
        (errno.EPERM, "operation not permitted"),
    ],
)
def test_a_storage_fault_is_one_line_naming_the_path_and_the_setting(
    params, tmp_path, monkeypatch, code, reason
):
    def fault(*_args, **_kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic.os, "fsync", fault)  # as a deferred write error surfaces
    result = sample(params)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"error: {reason} while writing {tmp_path / 'data'}")
    assert lines[0].endswith("or point paths.data elsewhere")
    assert TRACEBACK not in result.output


def test_a_raw_os_error_from_any_command_is_reported_the_same_way(params, monkeypatch):
    from recfound.data import sample as sample_module

    def unwritable(*_args, **_kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/srv/shared/data")

    monkeypatch.setattr(sample_module, "write_sample", unwritable)
    result = sample(params)
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: permission denied while accessing /srv/shared/data: "
        "give your user access or write somewhere else"
    )


@pytest.mark.parametrize("switch", ["option", "environment"])
def test_the_debug_switch_shows_the_traceback_as_well(params, monkeypatch, switch):
    monkeypatch.setattr(atomic.os, "fsync", enospc)
    if switch == "option":
        result = sample(params, "--debug")
    else:
        result = sample(params, env={DEBUG_ENV: "1"})
    assert result.exit_code == 1
    assert TRACEBACK in result.output
    assert "OSError: [Errno 28]" in result.output  # the original fault, chained
    assert result.output.strip().splitlines()[-1].startswith("error: no space left on device")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories anyway")
def test_a_real_read_only_directory_is_one_line_naming_it(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"paths": {"data": str(locked / "data")}}), encoding="utf-8")
    locked.chmod(0o555)
    try:
        result = sample(params)
    finally:
        locked.chmod(0o755)
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: permission denied while writing {locked / 'data'}: "
        "give your user access or point paths.data elsewhere"
    )
