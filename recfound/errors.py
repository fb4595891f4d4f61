"""Errors that name where bad input is and why, for people rather than tracebacks.

Storage faults (disk full, quota, read-only file system, permission) are translated here, in
one place, into one line naming the path and what to do. The OS often names no file (ENOSPC
from write/flush/close), so the atomic writers (recfound.atomic) re-raise them as
StorageError with the path they were writing.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


class RecFoundError(Exception):
    """Base of the project's user-facing errors; the CLI prints them without a traceback."""


class DataError(RecFoundError):
    """Bad input data: names the file, the line or row when known, and the reason."""

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {reason}")


class ValidationFailed(RecFoundError):
    """A Great Expectations suite failed; the message names suite, expectation, column, count."""


class StageTerminated(BaseException):
    """The stage process was told to stop (SIGTERM, e.g. because its launcher died).

    Raised by the SIGTERM handler recfound.lifeline installs, so `finally` blocks and context
    managers unwind (the MLflow run is closed as KILLED, the workspace lock released) instead
    of the process vanishing mid-write. A BaseException, like KeyboardInterrupt: an
    `except Exception` in a stage must not swallow a request to stop.
    """


# errno -> (what happened, what to do about it)
_STORAGE_FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("no space left on device", "free space"),
    errno.EDQUOT: ("disk quota exceeded", "free space within your quota"),
    errno.EROFS: ("read-only file system", "remount it writable"),
    errno.EACCES: ("permission denied", "give your user access"),
    errno.EPERM: ("operation not permitted", "give your user access"),
}
# safetensors (Rust) reports I/O errors as SafetensorError("... (os error 28)"), no errno.
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class StorageError(RecFoundError, OSError):
    """A storage fault while `action` `path`; keeps errno and names the path the user knows
    (the target of an atomic write, not its temp sibling)."""

    def __init__(self, code: int, path: str | Path, action: str = "writing") -> None:
        OSError.__init__(self, code, os.strerror(code), str(path))
        self.path = Path(path)
        self.action = action

    def __str__(self) -> str:
        return storage_message(self)


def storage_errno(err: BaseException) -> int | None:
    """The errno of `err` if it is a storage fault (an OSError, or a safetensors error that
    wraps one), else None."""
    if isinstance(err, OSError):
        code = err.errno
    else:
        match = _RUST_OS_ERROR.search(str(err)) if type(err).__name__ == "SafetensorError" else None
        code = int(match.group(1)) if match else None
    return code if code in _STORAGE_FAULTS else None


@contextmanager
def naming(path: str | Path, action: str = "writing") -> Iterator[None]:
    """Re-raise a storage fault inside as StorageError naming `path` (unless it names its
    own file already)."""
    try:
        yield
    except StorageError:
        raise
    except Exception as err:
        code = storage_errno(err)
        if code is None:
            raise
        raise StorageError(code, getattr(err, "filename", None) or path, action) from err


def setting_for(path: str | Path, settings: Mapping[str, Path]) -> str | None:
    """The setting (e.g. `paths.checkpoints`) whose directory holds `path`, the innermost."""
    where = Path(os.path.abspath(path))
    holders = [
        (len(Path(os.path.abspath(root)).parts), name)
        for name, root in settings.items()
        if where.is_relative_to(os.path.abspath(root))
    ]
    return max(holders)[1] if holders else None


def storage_message(err: BaseException, setting: str | None = None) -> str:
    """One line: what happened, while doing what to which path, and what to do.

    `setting` names the params.yaml key that chose the path, so the advice can say where to
    point it instead."""
    reason, fix = _STORAGE_FAULTS[storage_errno(err)]
    action, path = getattr(err, "action", "accessing"), getattr(err, "filename", None)
    where = f" while {action} {path}" if path else ""
    elsewhere = f"point {setting} elsewhere" if setting else "write somewhere else"
    return f"{reason}{where}: {fix} or {elsewhere}"
