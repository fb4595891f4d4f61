"""A small synthetic unified dataset (recfound.data.schema) for tests and smoke benchmarks.

Rows follow the schema of docs/unified-schema.md with short, learnable texts: an embedding
query shares its item's words with its positive passage; a generative answer is a simple
function of its input. Not a stand-in for the real sample, only for exercising the training code.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np

from recfound.data.schema import FEATURES
from recfound.tasks import TASKS

_COLOURS = ("red", "blue", "green", "black", "white", "pink")
_THINGS = ("shirt", "shoes", "jacket", "socks", "bag", "hat")
_BRANDS = ("Acme", "Zeta", "Nova", "Orbit")


def _item(rng: np.random.Generator) -> tuple[str, str, str]:
    return str(rng.choice(_COLOURS)), str(rng.choice(_THINGS)), str(rng.choice(_BRANDS))


def _row(task_index: int, split: str, index: int, rng: np.random.Generator) -> dict:
    task = TASKS[task_index]
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
        "source": "synthetic",
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
        row["output"] = "yes" if colour in _COLOURS[:3] else "no"
        row["input"] += " Is it a cool colour? yes or no."
    return row


def synthetic_unified(
    train_per_task: int = 12, validation_per_task: int = 4, test_per_task: int = 4, seed: int = 0
) -> datasets.DatasetDict:
    """A DatasetDict train/validation/test with `*_per_task` rows for each of the 13 tasks."""
    rng = np.random.default_rng(seed)
    splits = {}
    for split, n in (
        ("train", train_per_task),
        ("validation", validation_per_task),
        ("test", test_per_task),
    ):
        rows = [_row(t.id, split, i, rng) for t in TASKS for i in range(n)]
        splits[split] = datasets.Dataset.from_list(rows, features=FEATURES)
    return datasets.DatasetDict(splits)


def write_synthetic_unified(out_dir: str | Path, **sizes: int) -> Path:
    """Save `synthetic_unified(**sizes)` to `out_dir` (datasets.save_to_disk) and return it."""
    out_dir = Path(out_dir)
    synthetic_unified(**sizes).save_to_disk(str(out_dir))
    return out_dir
