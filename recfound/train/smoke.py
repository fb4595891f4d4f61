"""A small synthetic unified dataset (recfound.data.schema) for tests and smoke benchmarks.

Rows follow the schema of docs/unified-schema.md with short, learnable texts: an embedding
query shares its item's words with its positive passage; a generative answer is a simple
function of its input. Not a stand-in for the real sample, only for exercising the training code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np

from recfound.data.schema import FEATURES
from recfound.tasks import TASKS, Task, task_by_code

DEFAULT_SOURCE = "synthetic"

_COLOURS = ("red", "blue", "green", "black", "white", "pink")
_THINGS = ("shirt", "shoes", "jacket", "socks", "bag", "hat")
_BRANDS = ("Acme", "Zeta", "Nova", "Orbit")


def _item(rng: np.random.Generator) -> tuple[str, str, str]:
    return str(rng.choice(_COLOURS)), str(rng.choice(_THINGS)), str(rng.choice(_BRANDS))


def _row(task: Task, split: str, index: int, source: str, rng: np.random.Generator) -> dict:
    colour, thing, brand = _item(rng)
    text = f"{colour} {thing} by {brand}"
    row = {
        "id": f"{task.code}-{split}-{index}",
        "task_id": task.id,
        "task": task.code,
        "kind": task.kind.value,
        "instruction": f"Task {task.code}: answer briefly.",
        "input": f"The user looks at a {text}.",
        "output": "",
        "options": [],
        "option_ids": [],
        "positives": [],
        "positive_ids": [],
        "negatives": [],
        "negative_ids": [],
        "category": thing,
        "user_id": "",
        "target_key": f"{task.code}:{split}:{index}",
        "source": source,
    }
    if task.is_embedding:
        others = [f"{c} {t} by {b}" for c, t, b in (_item(rng) for _ in range(3))]
        row["instruction"] = f"Represent the {task.code} query for retrieving the item"
        row["positives"] = [f"A {text}, in stock."]
        row["positive_ids"] = [f"item-{colour}-{thing}"]
        row["negatives"] = [f"A {o}, in stock." for o in others]
        row["negative_ids"] = [f"item-{i}" for i in range(3)]
    else:
        row["options"] = ["yes", "no"]
        row["option_ids"] = [f"answer-{option}" for option in row["options"]]
        row["output"] = "yes" if colour in _COLOURS[:3] else "no"
        row["input"] += " Is it a cool colour? yes or no."
    return row


def _tasks(tasks: Iterable[Task | str] | None) -> tuple[Task, ...]:
    """`tasks` as Task objects in id order (codes accepted); None means all thirteen."""
    if tasks is None:
        return TASKS
    chosen = {t.id: t for t in (task_by_code(t) if isinstance(t, str) else t for t in tasks)}
    if not chosen:
        raise ValueError("synthetic_unified needs at least one task")
    return tuple(chosen[i] for i in sorted(chosen))


def synthetic_unified(
    train_per_task: int = 12,
    validation_per_task: int = 4,
    test_per_task: int = 4,
    seed: int = 0,
    tasks: Iterable[Task | str] | None = None,
    sources: Sequence[str] = (DEFAULT_SOURCE,),
) -> datasets.DatasetDict:
    """A DatasetDict train/validation/test with `*_per_task` rows for each task of `tasks`.

    `tasks` (Task objects or codes; default all 13) is the task set a "bring your own data"
    build would produce: the other tasks get no rows at all. Rows take their `source` from
    `sources` in turn, so several sources give per-source results something to split.
    """
    rng = np.random.default_rng(seed)
    chosen = _tasks(tasks)
    splits = {}
    for split, n in (
        ("train", train_per_task),
        ("validation", validation_per_task),
        ("test", test_per_task),
    ):
        rows = [_row(t, split, i, sources[i % len(sources)], rng) for t in chosen for i in range(n)]
        splits[split] = datasets.Dataset.from_list(rows, features=FEATURES)
    return datasets.DatasetDict(splits)


def write_synthetic_unified(out_dir: str | Path, **options: Any) -> Path:
    """Save `synthetic_unified(**options)` to `out_dir` (datasets.save_to_disk) and return it."""
    out_dir = Path(out_dir)
    synthetic_unified(**options).save_to_disk(str(out_dir))
    return out_dir
