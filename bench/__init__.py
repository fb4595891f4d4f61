"""Benchmarks: `python -m bench.<name>` writes JSON to bench/results/<name>.json."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from recfound.atomic import atomic_file


def machine(**extra: Any) -> dict[str, Any]:
    """What a result depends on beyond its settings: the CPUs this process may use, Python,
    the platform, and whatever the benchmark adds (library versions, threads)."""
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
    }


def write_result(
    result: dict[str, Any], out: str | Path, show: dict[str, Any] | None = None
) -> None:
    """Write `result` as JSON to `out` (atomically) and print `show` (default: all of it)."""
    with atomic_file(out) as handle:
        json.dump(result, handle, indent=2, default=str)
        handle.write("\n")
    print(json.dumps(result if show is None else show, indent=2, default=str))
    print(f"written to {out}")
