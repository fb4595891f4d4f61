"""Fault injection for the orchestration tests: make one stage fail exactly once.

`RECFOUND_FAULT_ONCE=<stage>` together with `RECFOUND_FAULT_MARKER=<file>` makes that stage
raise on its first attempt (the marker file records that the fault fired); every later attempt
finds the marker and runs normally. With the variables unset this does nothing. The retry
tests use it to show that a failing stage is retried and the pipeline still completes.
"""

from __future__ import annotations

import os
from pathlib import Path

from recfound.errors import RecFoundError

FAULT_ONCE_ENV = "RECFOUND_FAULT_ONCE"
FAULT_MARKER_ENV = "RECFOUND_FAULT_MARKER"


class InjectedFault(RecFoundError):
    """The deliberate, one-time failure requested through RECFOUND_FAULT_ONCE."""


def inject_fault_once(stage: str) -> None:
    """Raise InjectedFault if `stage` is the one named in RECFOUND_FAULT_ONCE and not yet failed."""
    if os.environ.get(FAULT_ONCE_ENV) != stage:
        return
    marker = os.environ.get(FAULT_MARKER_ENV)
    if not marker:
        raise RecFoundError(f"{FAULT_ONCE_ENV}={stage} needs {FAULT_MARKER_ENV}=<file> as well")
    try:
        # "x": create only if absent, atomically, so two attempts can never both fire
        with Path(marker).open("x", encoding="utf-8") as handle:
            handle.write(stage)
    except FileExistsError:
        return
    raise InjectedFault(f"stage {stage}: injected failure ({FAULT_ONCE_ENV}, marker {marker})")
