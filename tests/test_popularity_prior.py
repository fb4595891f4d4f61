"""The popularity prior fused into U2I scores (recfound.evaluate.popularity_prior)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from recfound.evaluate.popularity_prior import (
    PRIOR_SYSTEM,
    PopularityPrior,
    choose_weight,
    fused,
)
from recfound.tasks import task_by_code

U2I = task_by_code("U2I")


def row(positive: str, negatives: list[str]) -> dict:
    return {
        "positives": [f"text of {positive}"],
        "positive_ids": [positive],
        "negatives": [f"text of {n}" for n in negatives],
        "negative_ids": negatives,
    }


ROWS = [row("hit", ["a", "b"]), row("hit", ["b", "a"])]
# the model puts the positive second on both rows, just behind one negative
SCORES = [np.array([0.50, 0.52, 0.10]), np.array([0.50, 0.10, 0.52])]


def test_the_prior_adds_beta_log1p_count_to_each_pool_item_in_pool_order():
    counts = Counter({"hit": 3, "b": 1})
    out = fused(SCORES, ROWS, counts, 0.5)
    assert np.allclose(out[0], SCORES[0] + 0.5 * np.log1p([3, 0, 1]))
    assert np.allclose(out[1], SCORES[1] + 0.5 * np.log1p([3, 1, 0]))
    assert np.allclose(fused(SCORES, ROWS, counts, 0.0)[0], SCORES[0])  # β = 0 is the model


def test_the_smallest_weight_that_lifts_popular_positives_is_chosen():
    choice = choose_weight(SCORES, ROWS, Counter({"hit": 5}), [0.1, 0.0, 0.001, 1.0], cutoff=20)
    assert choice.validation_mrr == {0.0: 0.5, 0.001: 0.5, 0.1: 1.0, 1.0: 1.0}
    assert choice.weight == 0.1 and choice.validation_rows == 2


def test_no_weight_is_chosen_when_the_prior_does_not_help():
    # the negatives are the popular items: any β > 0 only pushes the positive further down
    choice = choose_weight(SCORES, ROWS, Counter({"a": 9, "b": 9}), [0.0, 0.1, 1.0], cutoff=20)
    assert choice.weight == 0.0
    with pytest.raises(ValueError, match="no prior weights"):
        choose_weight(SCORES, ROWS, Counter(), [], cutoff=20)


def test_the_fused_system_rescoring_only_u2i_with_the_model_scores_beneath():
    class Model:
        name = "recfound"

        def score_pools(self, task, rows):
            assert task == U2I
            return SCORES[: len(rows)]

    system = PopularityPrior(Model(), Counter({"hit": 5}), 0.1)
    assert system.name == PRIOR_SYSTEM
    assert system.supports(U2I) and not system.supports(task_by_code("Q2I"))
    best = [int(np.argmax(pool)) for pool in system.score_pools(U2I, ROWS)]
    assert best == [0, 0]  # the popular positive now first
