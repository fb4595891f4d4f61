"""logQ correction of the contrastive loss (Yi et al., RecSys 2019, "Sampling-bias-corrected
neural modeling for large corpus item recommendations"), `train.logq_correction`.

In-batch negatives are other queries' passages, so an item is a negative in proportion to how
often it is drawn: popular items are everyone's negatives and InfoNCE pushes them away from
every query, which a popularity count then beats. The correction subtracts each passage's log
sampling probability from its logit, for the positive and every negative alike:

    s_c(q, p_j) = q·p_j / τ − log Q_j

Q_j is the share of the passage slots of a pass over the TRAIN split that item j fills in
expectation, from how training draws passages (recfound.train.batches): an embedding row puts
one of its |P| positives and group_size − 1 of its |N| stored hard negatives in the batch, so

    c_j = Σ_rows [j ∈ P_row] / |P_row| + [j ∈ N_row] · (group_size − 1) / |N_row|
    Q_j = (c_j + 1) / Σ_i (c_i + 1)

(one pseudo-count per item, so an item seen once is not infinitely rare). S2Sched changes how
often each TASK is drawn, not which rows of a task, so Q is estimated per pass as written.

Training only: validation losses (S2Sched's slopes, merge's best_per_task) stay the plain
InfoNCE, comparable across runs with and without the correction, and retrieval scores stay
the cosine.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import datasets
import torch

from recfound.tasks import Kind

# Columns read from the train split (embedding rows only).
_COLUMNS = ["kind", "positive_ids", "negative_ids"]


def passage_draw_counts(rows: Iterable[Mapping], group_size: int) -> dict[str, float]:
    """c_j of the module docstring: expected draws of each passage id per pass over `rows`."""
    counts: dict[str, float] = defaultdict(float)
    for row in rows:
        if row["kind"] != Kind.EMBEDDING:
            continue
        positives, negatives = row["positive_ids"], row["negative_ids"]
        for item in positives:
            counts[item] += 1 / len(positives)
        if negatives and group_size > 1:
            for item in negatives:
                counts[item] += (group_size - 1) / len(negatives)
    return dict(counts)


class PassageLogQ:
    """log Q_j per passage id of the train split; an id it never saw gets the pseudo-count's
    probability (a validation-only or new item: as rare as the rarest)."""

    def __init__(self, counts: Mapping[str, float]) -> None:
        total = sum(counts.values()) + len(counts)
        self.log_total = math.log(total) if total else 0.0
        self.log_q = {item: math.log(count + 1) - self.log_total for item, count in counts.items()}

    @classmethod
    def of_split(cls, split: datasets.Dataset, group_size: int) -> PassageLogQ:
        """Q from the train split's embedding rows (module docstring)."""
        rows = split.select_columns(_COLUMNS).to_list()
        return cls(passage_draw_counts(rows, group_size))

    def __len__(self) -> int:
        return len(self.log_q)

    def of(self, item_ids: Iterable[str]) -> torch.Tensor:
        """(n,) float32 log Q of these ids, in order."""
        unseen = -self.log_total
        return torch.tensor([self.log_q.get(i, unseen) for i in item_ids], dtype=torch.float32)
