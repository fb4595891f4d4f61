"""A popularity prior fused into RecFound's U2I scores: a documented option, off by default.

    s_β(u, i) = cos(q_u, p_i) + β · log(1 + n_i)

q_u: the user's history embedded as a U2I query, p_i: item i as a passage (RecFound's own
vectors, the ones its U2I row of Table 3 scores); n_i: how often item i was a training target
(`baselines.target_item_counts`, the popularity baseline's counts). β = 0 is RecFound; a large β
orders the pool by popularity and lets the model break its ties. β is the one of
`evaluate.popularity_prior_weights` with the best mean MRR@k on the VALIDATION split's U2I rows
(ties: the smaller β, so 0 wins unless the prior helps); the test rows never choose it.

The paper's RecFound has no prior, so the fused model is a system of its own, `recfound+prior`,
beside RecFound and popularity in the paper's protocol (U2I of Table 3 and its paired
comparisons), never RecFound's score. results.md adds a section with β, the validation MRR of
every weight, and the fused model minus RecFound and minus popularity, paired.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recfound.data.unified import load_unified
from recfound.evaluate import bootstrap, report
from recfound.evaluate.metrics import PairScorer, reciprocal_ranks
from recfound.evaluate.protocol import SystemRun, TaskResult, evaluate_system, primary_metric
from recfound.evaluate.systems import Row, System, pool_ids
from recfound.tasks import Task, task_by_code

PRIOR_SYSTEM = "recfound+prior"
TASK = task_by_code("U2I")  # the one embedding task whose targets popularity counts
TITLE = "Popularity prior fused into RecFound's U2I scores"


def fused(
    scores: Sequence[np.ndarray], rows: Sequence[Row], counts: Mapping[str, int], weight: float
) -> list[np.ndarray]:
    """Each pool's scores plus `weight` · log(1 + training target count) of its items."""
    return [
        np.asarray(s, dtype=float) + weight * np.log1p([counts.get(i, 0) for i in pool_ids(row)])
        for s, row in zip(scores, rows, strict=True)
    ]


@dataclass(frozen=True)
class PriorChoice:
    """β and what chose it: the validation MRR@k of every weight tried, on how many rows."""

    weight: float
    validation_mrr: dict[float, float]
    validation_rows: int


def choose_weight(
    scores: Sequence[np.ndarray],
    rows: Sequence[Row],
    counts: Mapping[str, int],
    weights: Sequence[float],
    cutoff: int,
) -> PriorChoice:
    """The weight with the best mean MRR@`cutoff` of the fused scores on `rows` (ties: the
    smallest weight)."""
    if not weights:
        raise ValueError("no prior weights to choose from")
    n_positives = [len(row["positives"]) for row in rows]
    mrr = {
        float(w): float(
            reciprocal_ranks(fused(scores, rows, counts, w), n_positives, cutoff).mean()
        )
        for w in sorted(weights)
    }
    best = max(mrr.values())
    return PriorChoice(min(w for w, v in mrr.items() if v == best), mrr, len(rows))


class PopularityPrior:
    """`system`'s U2I pool scores with the prior fused in (a System)."""

    def __init__(self, system: System, counts: Mapping[str, int], weight: float) -> None:
        self.name = PRIOR_SYSTEM
        self.system, self.counts, self.weight = system, counts, weight

    def supports(self, task: Task) -> bool:
        return task == TASK

    def generate(self, task: Task, rows: Sequence[Row]) -> list[str]:
        raise NotImplementedError("the prior re-scores retrieval; it generates nothing")

    def score_pools(self, task: Task, rows: Sequence[Row]) -> list[np.ndarray]:
        return fused(self.system.score_pools(task, rows), rows, self.counts, self.weight)


@dataclass
class PriorRun:
    """The fused system of one evaluate run: prepared with the validation rows and counts, then
    `add`ed once RecFound is loaded."""

    weights: tuple[float, ...]
    validation: list[Row]
    counts: Counter[str]
    cutoff: int
    source: Path
    choice: PriorChoice | None = None
    runs: dict[str, SystemRun] = field(default_factory=dict)

    @classmethod
    def prepare(
        cls,
        weights: Sequence[float],
        unified: Path,
        train: Sequence[Row],
        test: Mapping[str, Sequence[Row]],
        cutoff: int,
    ) -> PriorRun | None:
        """None when no weights are set, or U2I has no test or no validation rows (said)."""
        from recfound.evaluate.baselines import target_item_counts

        if not weights:
            return None
        validation = [
            row
            for row in load_unified(unified, ("validation",))["validation"].to_list()
            if row["task"] == TASK.code
        ]
        if TASK.code not in test or not validation:
            print(f"{PRIOR_SYSTEM} skipped: no {TASK.code} test or validation rows")
            return None
        return cls(tuple(weights), validation, target_item_counts(train), cutoff, unified)

    def add(self, system: System, test: Mapping[str, Sequence[Row]], scorer: PairScorer) -> None:
        """Choose β with `system`'s validation scores, then evaluate the fused system on test."""
        scores = system.score_pools(TASK, self.validation)
        self.choice = choose_weight(scores, self.validation, self.counts, self.weights, self.cutoff)
        tried = ", ".join(f"β={w:g}: {v:.3f}" for w, v in self.choice.validation_mrr.items())
        print(f"{PRIOR_SYSTEM}: β={self.choice.weight:g} (validation MRR@{self.cutoff}: {tried})")
        fused_system = PopularityPrior(system, self.counts, self.choice.weight)
        self.runs[PRIOR_SYSTEM] = evaluate_system(
            fused_system, {TASK.code: test[TASK.code]}, scorer, self.cutoff, self.source
        )


def render(
    prior: PriorRun | None,
    results: Mapping[str, Mapping[str, TaskResult]],
    settings: bootstrap.BootstrapSettings,
) -> str:
    """The results.md section: β, the fused scores beside RecFound's and popularity's, and the
    fused system minus each, paired ("" when the prior was not run)."""
    if prior is None or prior.choice is None or PRIOR_SYSTEM not in results:
        return ""
    key = primary_metric(TASK, prior.cutoff)
    shown = {
        n: {TASK.code: results[n][TASK.code]}
        for n in ("recfound", PRIOR_SYSTEM, "popularity")
        if TASK.code in results.get(n, {})
    }
    columns = [(f"{TASK.code} {key}", TASK.code, key)]
    comparisons = bootstrap.compare_systems(shown, PRIOR_SYSTEM, settings)
    tried = ", ".join(f"{w:g} → {v:.3f}" for w, v in prior.choice.validation_mrr.items())
    return "\n".join(
        [
            f"## {TITLE}\n",
            f"Not the paper's model: RecFound's U2I scores plus β · log(1 + n), n the item's "
            f"count as a training target (the popularity baseline's counts), as a system of its "
            f"own (docs/evaluation.md, popularity prior). β = {prior.choice.weight:g}, the best "
            f"{key} on the {prior.choice.validation_rows} validation U2I rows among the "
            f"weights tried ({tried}); the test rows did not choose it.\n",
            report.keyed_table(shown, columns),
            report.keyed_comparison_table(comparisons, columns),
            "",  # a blank line ends the table before the next section's heading
        ]
    )
