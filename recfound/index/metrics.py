"""Full-catalogue ranking metrics of each query: ranked item ids against its target id(s).

For a query with targets T and ranked ids r_1, r_2, … (excluded items already removed):

    Recall@k = |{r_1..r_k} ∩ T| / |T|
    NDCG@k   = Σ_{i≤k, r_i ∈ T} 1/log2(i + 1)  /  Σ_{i≤min(k, |T|)} 1/log2(i + 1)

Binary relevance, as the pool metrics of recfound.evaluate.metrics. Both return one value per
query, so the evaluate stage takes `RowStats.of_values(...)` for bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np


def _check(ranked: Sequence[Sequence[str]], targets: Sequence[Collection[str]], k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if len(ranked) != len(targets):
        raise ValueError(f"{len(ranked)} rankings for {len(targets)} target sets")
    if any(not t for t in targets):
        raise ValueError("every query needs at least one target")


def recall_at_k(
    ranked: Sequence[Sequence[str]], targets: Sequence[Collection[str]], k: int
) -> np.ndarray:
    """Per query: the share of its targets among its top `k` ranked ids."""
    _check(ranked, targets, k)
    return np.array(
        [len(set(r[:k]) & set(t)) / len(set(t)) for r, t in zip(ranked, targets, strict=True)]
    )


def ndcg_at_k(
    ranked: Sequence[Sequence[str]], targets: Sequence[Collection[str]], k: int
) -> np.ndarray:
    """Per query: DCG of its top `k` ranked ids over the DCG of the ideal ranking."""
    _check(ranked, targets, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for r, t in zip(ranked, targets, strict=True):
        wanted = set(t)
        gains = np.array([item in wanted for item in r[:k]], dtype=float)
        ideal = discounts[: min(k, len(wanted))].sum()
        values.append(float(gains @ discounts[: len(gains)]) / ideal)
    return np.array(values)
