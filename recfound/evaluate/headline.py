"""The headline: one primary metric per task and system, with its interval, small enough to read.

reports/metrics.json holds everything (every metric, per source, full catalogue, ranks) and is
too wide for a terminal: `dvc metrics show` flattens it into hundreds of columns. The headline
is what DVC declares as the metric instead: one file per task, `reports/headline/<TASK>.json`,

    {"metric": "MRR@20", "recfound": ".21 [.17,.27]", "base": ".19 [.15,.23]", "minilm": …}

so `dvc metrics show` prints a row per task and a column per system, each cell the task's
primary metric (recfound.evaluate.protocol.primary_metric) and its bootstrap interval. The
systems are RecFound and the baselines; "RecFound w/o Model Merge" and the ablation variants
are Table 4's business (results.md). A system that does not answer a task has no key there.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from recfound.atomic import atomic_dir
from recfound.evaluate.protocol import TaskResult


def short(value: float) -> str:
    """Two decimals without the leading zero: 0.215 -> '.21'; a perfect 1.00 -> '1'.

    Every character counts: five systems' cells must fit a 120-column terminal.
    """
    text = f"{value:.2f}"
    if text == "1.00":
        return "1"
    return text[1:] if text.startswith("0.") else text


def cell(result: TaskResult) -> str:
    """'.21 [.17,.27]': the primary score and its interval (the score alone without one)."""
    interval = result.intervals.get(result.primary)
    if interval is None:
        return short(result.score)
    return f"{short(result.score)} [{short(interval.low)},{short(interval.high)}]"


def headline(
    results: Mapping[str, Mapping[str, TaskResult]], systems: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Task code -> {"metric": primary key, system: cell} for the `systems` that answer it."""
    out: dict[str, dict[str, str]] = {}
    for name in systems:
        for code, result in results.get(name, {}).items():
            out.setdefault(code, {"metric": result.primary})[name] = cell(result)
    return out


def write_headline(
    out_dir: Path, results: Mapping[str, Mapping[str, TaskResult]], systems: Sequence[str]
) -> Path:
    """Write `out_dir/<TASK>.json` for every task (module docstring), replacing the directory."""
    with atomic_dir(out_dir) as tmp:
        for code, row in headline(results, systems).items():
            (tmp / f"{code}.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
    return out_dir
