"""Errors that name where bad input is and why, for people rather than tracebacks."""

from __future__ import annotations

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
