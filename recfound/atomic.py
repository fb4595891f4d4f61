"""Atomic outputs: write into a temporary sibling, then rename over the target.

A killed stage therefore leaves either the previous complete output or the new complete one,
never a half-written mix. The new output is fsynced (file before the rename, directory entry
after it), so a power cut does not leave a renamed but empty file either.

A storage fault (disk full, read-only, permission) is re-raised as StorageError naming the
target, or the file inside a target directory, never the temp sibling nobody knows about.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recfound.errors import StorageError, naming, storage_errno


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_path(path: str | Path) -> None:
    """Flush a file's or directory's contents (a directory's: its entries) to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        with naming(path):  # a deferred ENOSPC surfaces here, with no file name of its own
            os.fsync(fd)
    except OSError as err:
        # Some file systems cannot sync a directory; the data itself was synced already.
        if err.errno != errno.EINVAL or not os.path.isdir(path):
            raise
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under `root`, then `root` (already-synced files of a
    nested atomic write cost next to nothing)."""
    for here, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(os.path.join(here, name))
        fsync_path(here)


def _public_path(named: str | None, target: Path, tmp: Path | None) -> Path:
    """The path a person should read for a fault that named `named`: the file under `target`
    for one under the temp dir, `target` for the temp or old sibling itself or for no name."""
    if not named:
        return target
    path = Path(named)
    if tmp is not None and path.is_relative_to(tmp):
        return target / path.relative_to(tmp)
    if path.parent == target.parent and path.name.startswith(f".{target.name}."):
        return target
    return path


@contextmanager
def _faults_named(target: Path, tmp: Path | None = None) -> Iterator[None]:
    """Re-raise a storage fault inside as StorageError naming `_public_path`."""
    try:
        yield
    except Exception as err:
        code = storage_errno(err)
        if code is None:
            raise
        path = _public_path(getattr(err, "filename", None), target, tmp)
        raise StorageError(code, path, getattr(err, "action", "writing")) from err


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temp dir next to `target`; on success it replaces `target` whole."""
    target = Path(target)
    with _faults_named(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        # mkdtemp makes the dir 0700; outputs should have the usual umask-derived mode.
        tmp.chmod(0o777 & ~_current_umask())
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    try:
        with _faults_named(target, tmp):
            yield tmp
            _fsync_tree(tmp)
            if target.exists():
                os.replace(target, old)
            os.replace(tmp, target)
            fsync_path(target.parent)
    except BaseException:
        if old.exists() and not target.exists():
            os.replace(old, target)  # the rename of the new one failed: keep the previous
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_file(target: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator:
    """Open a temp file next to `target` for writing; on success rename it over `target`."""
    target = Path(target)
    with _faults_named(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.tmp-", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        tmp.chmod(0o666 & ~_current_umask())  # mkstemp makes it 0600
    try:
        with _faults_named(target, tmp):
            with open(tmp, mode, encoding=None if "b" in mode else encoding) as handle:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())  # the data, before a rename makes it the target
            os.replace(tmp, target)
            fsync_path(target.parent)  # the rename itself
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
