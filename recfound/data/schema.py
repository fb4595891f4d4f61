"""The unified dataset: one flat row schema for all 13 tasks (documented in docs/unified-schema.md).

A `datasets.DatasetDict` with splits train / validation / test, saved with `save_to_disk`.
Embedding rows fill `positives`/`negatives`; generative rows fill `output` (and `options` where
the task has lettered choices); the other side's fields are empty, never null.
"""

from __future__ import annotations

import datasets

SPLITS: tuple[str, ...] = ("train", "validation", "test")

FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),  # stable: same raw data + seed -> same id
        "task_id": datasets.Value("int32"),  # 0..12, recfound.tasks
        "task": datasets.Value("string"),  # task code, e.g. "U2I"
        "kind": datasets.Value("string"),  # "embedding" | "generative"
        "instruction": datasets.Value("string"),  # embedding: excluded from pooling
        "input": datasets.Value("string"),  # the query text / the task input
        "output": datasets.Value("string"),  # generative reference response ("" for embedding)
        "options": datasets.Sequence(datasets.Value("string")),  # e.g. ["A", ..., "T"] or []
        "option_ids": datasets.Sequence(datasets.Value("string")),  # item ids behind options (SR)
        "positives": datasets.Sequence(datasets.Value("string")),  # embedding passages
        "positive_ids": datasets.Sequence(datasets.Value("string")),
        "negatives": datasets.Sequence(datasets.Value("string")),  # same-category negatives
        "negative_ids": datasets.Sequence(datasets.Value("string")),
        "category": datasets.Value("string"),
        "user_id": datasets.Value("string"),  # "" when the task has no user
        "target_key": datasets.Value("string"),  # what is predicted; test keys never in train
        "source": datasets.Value("string"),  # raw source the row came from
    }
)

COLUMNS: tuple[str, ...] = tuple(FEATURES)
