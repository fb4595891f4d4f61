"""Per-row statistics: what every test score is computed from, and the interval it carries.

Every metric is a finisher f of additive per-row statistics: row i of a task contributes a
vector s_i (a row of `RowStats.table`), and on the rows taken with multiplicities w
(Σ_i w_i = n) the metric is f(Σ_i w_i s_i); recfound.evaluate.bootstrap gives the finisher of
each kind and resamples w. The scoring (recfound.evaluate.protocol) fills these in and keeps
them with each result (`TaskResult.evidence`, `TaskResult.intervals`); the bootstrap reads
them. Both import this module and neither imports the other for it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from recfound.evaluate.metrics import COUNT_COLUMNS

StatKind = Literal["mean", "precision", "recall", "f1", "macro_f1"]


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0."""
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    return np.divide(numerator, denominator, out=out, where=denominator > 0)


def _width(kind: StatKind, classes: Sequence[str]) -> int:
    """Columns of a statistics table: 1 value, 3 counts, or 3 counts per class."""
    if kind == "mean":
        return 1
    return len(COUNT_COLUMNS) * (len(classes) if kind == "macro_f1" else 1)


@dataclass(frozen=True)
class RowStats:
    """One metric as per-row statistics: `table` (rows × d) and the `kind` of finisher.

    `classes` (macro_f1 only) names the class of each (hits, predicted, actual) column triple.
    """

    kind: StatKind
    table: np.ndarray
    classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in get_args(StatKind):
            raise ValueError(f"unknown statistic kind {self.kind!r}")
        width = _width(self.kind, self.classes)
        if self.table.ndim != 2 or self.table.shape[1] != width:
            raise ValueError(f"{self.kind} statistics need rows × {width}, got {self.table.shape}")

    @classmethod
    def of_values(cls, values: np.ndarray) -> RowStats:
        """A mean metric from one value per row."""
        return cls("mean", np.asarray(values, dtype=float).reshape(-1, 1))

    def finish(self, sums: np.ndarray, n_rows: int) -> np.ndarray:
        """The metric of each resample from its weighted sums (resamples × d) -> (resamples,)."""
        if self.kind == "mean":
            return sums[:, 0] / n_rows
        if self.kind == "macro_f1":
            counts = sums.reshape(len(sums), len(self.classes), len(COUNT_COLUMNS))
            hits, predicted, actual = np.moveaxis(counts, -1, 0)
            present = predicted + actual > 0
            per_class = _ratio(2 * hits, predicted + actual)
            return _ratio((per_class * present).sum(axis=1), present.sum(axis=1))
        hits, predicted, actual = sums.T
        if self.kind == "precision":
            return _ratio(hits, predicted)
        if self.kind == "recall":
            return _ratio(hits, actual)
        return _ratio(2 * hits, predicted + actual)

    def point(self) -> float:
        """The metric on the rows as they are (every weight 1)."""
        return float(self.finish(self.table.sum(axis=0, keepdims=True), len(self.table))[0])

    def subset(self, indices: Sequence[int]) -> RowStats:
        return dataclasses.replace(self, table=self.table[list(indices)])

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "rows": self.table.tolist()}
        if self.classes:
            out["classes"] = list(self.classes)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RowStats:
        classes = tuple(raw.get("classes", ()))
        rows = np.asarray(raw["rows"], dtype=float)
        return cls(raw["kind"], rows.reshape(len(rows), _width(raw["kind"], classes)), classes)


@dataclass(frozen=True)
class RowEvidence:
    """What one system's scores on one task are made of: its per-row statistics per metric
    key, and the id and source of each row (in test-split order)."""

    ids: tuple[str, ...]
    sources: tuple[str, ...]
    stats: Mapping[str, RowStats]

    def __post_init__(self) -> None:
        if len(self.sources) != len(self.ids):
            raise ValueError(f"{len(self.ids)} row ids but {len(self.sources)} sources")
        for key, stats in self.stats.items():
            if len(stats.table) != len(self.ids):
                raise ValueError(
                    f"{key}: {len(stats.table)} rows of statistics, {len(self.ids)} ids"
                )

    def point_estimates(self) -> dict[str, float]:
        """Each metric on all the rows: the scores the report shows."""
        return {key: stats.point() for key, stats in self.stats.items()}

    def subset(self, indices: Sequence[int]) -> RowEvidence:
        return RowEvidence(
            tuple(self.ids[i] for i in indices),
            tuple(self.sources[i] for i in indices),
            {key: stats.subset(indices) for key, stats in self.stats.items()},
        )

    def for_source(self, source: str) -> RowEvidence:
        """The rows of one data source (a per-source result's evidence)."""
        return self.subset([i for i, s in enumerate(self.sources) if s == source])

    def to_json(self) -> dict[str, Any]:
        return {
            "ids": list(self.ids),
            "sources": list(self.sources),
            "stats": {key: stats.to_json() for key, stats in self.stats.items()},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> RowEvidence:
        stats = {key: RowStats.from_json(value) for key, value in raw["stats"].items()}
        return cls(tuple(raw["ids"]), tuple(raw["sources"]), stats)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def to_json(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high}
