"""Training metrics on disk: a per-step JSONL log and the CSVs DVC plots.

`steps.jsonl` has one JSON object per step with at least: step, loss, loss_emb, loss_gen, lr,
loss/<CODE> (tasks trained that step), ratio/<CODE> (S2Sched's share of its group's slots);
plus n/<CODE> (samples), tokens and, on S2Sched update steps, val_loss/<CODE>. <CODE> ranges
over the task set of the run (the tasks with training rows), so every file here covers only
those tasks; loss_emb (or loss_gen) stays 0 when the set has no task of that kind.

The log is appended and flushed step by step, so a killed run keeps what it logged; on resume
from checkpoint k the records after k are dropped (they will be logged again, identically).
The CSVs are long format, one row per (step, task):
  loss_per_task.csv   step,task,loss     per-task training loss curves
  ratio_per_task.csv  step,task,ratio    per-task sample ratio (the paper's Figure 3)
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from recfound.atomic import atomic_file
from recfound.errors import naming
from recfound.outputs import LOSS_CSV, RATIO_CSV, VAL_LOSS_FILE
from recfound.tasks import TASKS


class JsonlLog:
    """An append-only JSON-lines file of records that carry an integer "step"."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def records(self) -> list[dict[str, Any]]:
        """Every complete record; a torn last line (a kill mid-write) is ignored."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return out

    def resume(self, step: int) -> None:
        """Keep only records with step <= `step` (atomically); start empty when step is 0."""
        kept = [r for r in self.records() if int(r["step"]) <= step]
        with atomic_file(self.path) as handle:
            handle.writelines(json.dumps(r) + "\n" for r in kept)

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record and flush it to disk."""
        # naming: a full disk's error from write/close names no file
        with naming(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")


def _long_rows(records: Iterable[Mapping[str, Any]], prefix: str) -> list[tuple[int, str, float]]:
    rows = []
    for record in records:
        for task in TASKS:
            value = record.get(f"{prefix}/{task.code}")
            if value is not None:
                rows.append((int(record["step"]), task.code, float(value)))
    return rows


def write_plot_csvs(records: Iterable[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write loss_per_task.csv and ratio_per_task.csv (long format) from step records."""
    records = list(records)
    out_dir = Path(out_dir)
    written = []
    for name, prefix, column in ((LOSS_CSV, "loss", "loss"), (RATIO_CSV, "ratio", "ratio")):
        with atomic_file(out_dir / name) as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["step", "task", column])
            writer.writerows(_long_rows(records, prefix))
        written.append(out_dir / name)
    return written


def write_val_loss(
    before: Mapping[int, float], after: Mapping[int, float], out_dir: str | Path
) -> Path:
    """val_loss.json: per task the validation loss of the untrained and the trained adapter."""
    tasks = {
        TASKS[t].code: {
            "before": before[t],
            "after": after[t],
            "improved": after[t] < before[t],
        }
        for t in sorted(before)
    }
    payload = {"tasks": tasks, "all_improved": all(v["improved"] for v in tasks.values())}
    target = Path(out_dir) / VAL_LOSS_FILE
    with atomic_file(target) as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
    return target
