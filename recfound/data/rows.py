"""The build's rows on their way to disk: spilled per task and split, checked, then written.

`RowWriter` spills each task's (split, row) stream to JSON Lines (memory stays bounded
whatever the data size), checking on the way that no train row has a test row's target and,
at the end, that no row id repeats. `write_split` streams the kept tasks' spills into one
split in the layout of `datasets.Dataset.save_to_disk`.
"""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from datasets.arrow_writer import ArrowWriter

from recfound.data.schema import FEATURES, SPLITS
from recfound.data.tasks.common import RowStream, progress
from recfound.errors import RecFoundError
from recfound.tasks import BY_CODE, TASKS

# The file layout of `datasets.Dataset.save_to_disk` (one data file per split).
DATA_FILE = "data-00000-of-00001.arrow"
DATASET_STATE_FILE = "state.json"
DATASET_INFO_FILE = "dataset_info.json"
DATASET_DICT_FILE = "dataset_dict.json"


class BuildError(RecFoundError):
    """The unified rows break a rule; names the task, split, row (when one) and the reason."""

    def __init__(self, task: str, split: str, reason: str, row: int | None = None) -> None:
        self.task, self.split, self.row, self.reason = task, split, row, reason
        where = f"{task}/{split}" + (f" row {row}" if row is not None else "")
        super().__init__(f"unified dataset, {where}: {reason}")


class RowWriter:
    """Spills each task's rows to one JSON Lines file per split, checking them on the way.

    Memory: the test target keys of the current task and 8 bytes of each row id (duplicate
    ids are found by sorting those digests once all rows are written).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (task, source, split) -> rows
        # Per row written: the first 8 bytes of its id, its task, split and index (compact).
        self._digests = array("Q")
        self._task = array("B")
        self._split = array("B")
        self._index = array("L")

    def path(self, code: str, split: str) -> Path:
        return self.directory / f"{code}.{split}.jsonl"

    def rows(self, code: str, split: str) -> int:
        return sum(n for (c, _, s), n in self.counts.items() if (c, s) == (code, split))

    def write(self, code: str, stream: RowStream) -> None:
        """Spill one task's stream; a train row whose target a test row holds is an error."""
        test_keys: dict[str, int] = {}
        handles = {split: self.path(code, split).open("w", encoding="utf-8") for split in SPLITS}
        index: Counter[str] = Counter()
        try:
            for split, row in progress(stream, f"rows {code}"):
                if split == "test":
                    test_keys.setdefault(row["target_key"], index[split])
                elif split == "train" and row["target_key"] in test_keys:
                    raise BuildError(
                        code,
                        "train",
                        f"target {row['target_key']!r} is also the target of test row "
                        f"{test_keys[row['target_key']]}",
                        row=index[split],
                    )
                handles[split].write(json.dumps(row, ensure_ascii=False) + "\n")
                self._digests.append(int(row["id"][:16], 16))
                self._task.append(BY_CODE[code].id)
                self._split.append(SPLITS.index(split))
                self._index.append(index[split])
                self.counts[code, row["source"], split] += 1
                index[split] += 1
        finally:
            for handle in handles.values():
                handle.close()

    def _where(self, position: int) -> tuple[str, str, int]:
        return (
            TASKS[self._task[position]].code,
            SPLITS[self._split[position]],
            self._index[position],
        )

    def check_unique_ids(self, kept: Sequence[str]) -> None:
        """BuildError for the first repeated row id among the kept tasks' rows."""
        digests = np.frombuffer(self._digests, dtype=np.uint64)
        order = np.argsort(digests, kind="stable")
        repeated = np.flatnonzero(digests[order][1:] == digests[order][:-1])
        clashes = sorted((int(order[i + 1]), int(order[i])) for i in repeated.tolist())
        for later, first in clashes:
            (code, split, row), other = self._where(later), self._where(first)
            if code in kept and other[0] in kept:
                raise BuildError(
                    code,
                    split,
                    f"duplicate id (also {other[0]}/{other[1]} row {other[2]}); "
                    "the raw data lists the same record twice",
                    row=row,
                )

    def save(self, tasks: Sequence[str], out_dir: Path) -> None:
        """Write the kept tasks' rows as a `datasets` DatasetDict at `out_dir`, tasks in id
        order within each split, streaming from the spill files (see `write_split`)."""
        for split in SPLITS:
            write_split([self.path(code, split) for code in tasks], out_dir / split, split)
        (out_dir / DATASET_DICT_FILE).write_text(json.dumps({"splits": list(SPLITS)}))


def write_split(paths: Sequence[Path], split_dir: Path, split: str) -> None:
    """One split in the layout of `Dataset.save_to_disk`, written row by row.

    The rows go straight from the spill files through `datasets`' ArrowWriter into the one
    data file: nothing is memory-mapped and read back (a save_to_disk of a dataset built
    first would map and copy it whole, and a 1M-review build would hold gigabytes). The two
    small metadata files follow save_to_disk's (tests/test_byod.py compares them with it).
    """
    split_dir.mkdir(parents=True)
    data_file = split_dir / DATA_FILE
    # Of the content, not of where it was spilled: the same rows give the same fingerprint,
    # which training's resume check relies on. Hashed in the same pass that writes.
    digest = hashlib.blake2b(digest_size=8)
    writer = ArrowWriter(features=FEATURES, path=str(data_file))
    try:
        for path in paths:
            with path.open("rb") as handle:
                for line in handle:
                    digest.update(line)
                    writer.write(json.loads(line))
            digest.update(b"\0")
        writer.finalize()
    finally:
        writer.close()
    state = {
        "_data_files": [{"filename": DATA_FILE}],
        "_fingerprint": digest.hexdigest(),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (split_dir / DATASET_STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    info = {"citation": "", "description": "", "features": FEATURES.to_dict()}
    info |= {"homepage": "", "license": ""}
    (split_dir / DATASET_INFO_FILE).write_text(json.dumps(info, indent=2))
