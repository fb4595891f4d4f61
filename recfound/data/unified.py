"""The one loader of the unified dataset, and what the build recorded beside it.

Every stage after `build` reads `paths.unified` through `load_unified`; the tasks it trains,
merges and evaluates are `present_tasks(dataset)`: those with training rows. The build writes
`build.json` next to the splits: the task set, why the other tasks were skipped, the ingest
report and the fingerprint of the raw data it read (the validate gate compares it with data/).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import datasets

from recfound.data.schema import SPLITS
from recfound.errors import DataError
from recfound.outputs import BUILD_MANIFEST
from recfound.tasks import TASKS, Task

# Bytes read at a time when fingerprinting raw files (bounded memory for any file size).
HASH_CHUNK = 1 << 20


def load_unified(path: str | Path, splits: Sequence[str] = SPLITS) -> datasets.DatasetDict:
    """The DatasetDict the build stage saved at `path`; DataError names what is wrong."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "unified dataset not found; run `recfound stage build` first")
    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(path, f"not a saved datasets.DatasetDict: {err}") from err
    if not isinstance(loaded, datasets.DatasetDict):
        raise DataError(path, "holds a single Dataset; expected a DatasetDict of splits")
    missing = [s for s in splits if s not in loaded]
    if missing:
        raise DataError(path, f"missing split(s) {', '.join(missing)}; found {list(loaded)}")
    return loaded


def present_tasks(dataset: datasets.DatasetDict, split: str = "train") -> tuple[Task, ...]:
    """The tasks with rows in `split` (train by default: the tasks the model learns), id order."""
    ids = set(dataset[split].unique("task_id")) if dataset[split].num_rows else set()
    return tuple(task for task in TASKS if task.id in ids)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """`build.json` of the unified dataset at `path` ({} for a dataset built before it existed)."""
    manifest = Path(path) / BUILD_MANIFEST
    if not manifest.is_file():
        return {}
    return json.loads(manifest.read_text(encoding="utf-8"))


def build_instructions(path: str | Path) -> dict[str, str]:
    """Task code -> the instruction it was trained with, from `build.json` at `path` ({} when
    absent: inference then uses each task's standard instruction)."""
    return dict(read_manifest(path).get("instructions", {}))


def raw_files(data_dir: str | Path) -> list[Path]:
    """Every file under `data_dir` (symlinks followed), in a stable order; hidden ones skipped."""
    data_dir = Path(data_dir)
    return sorted(
        p
        for p in data_dir.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(data_dir).parts)
    )


def data_fingerprint(data_dir: str | Path, files: Iterable[Path] | None = None) -> str:
    """A content hash of the raw data: every file's relative path and bytes (blake2b)."""
    data_dir = Path(data_dir)
    digest = hashlib.blake2b(digest_size=16)
    for path in raw_files(data_dir) if files is None else sorted(files):
        digest.update(path.relative_to(data_dir).as_posix().encode("utf-8") + b"\0")
        with path.open("rb") as handle:
            while chunk := handle.read(HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()
