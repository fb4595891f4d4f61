"""ID-based recommenders of the leave-one-out protocol (recfound.evaluate.leave_one_out).

Each is fitted on one source's training sequences (catalogue indices 0..n_items-1 of that
source, oldest first: every user's interactions but the held-out two) and then scores every
catalogue item after a history (the user's interactions before the target):

- popularity: how often the item occurs in the training sequences; the same for every user.
- EASE (Steck, WWW 2019) through Cornac's `EASE`: B = the closed-form item-item weights of the
  binary user x item matrix X of the training part (λ = `ease_lambda`, negative weights kept
  as in the paper); a history's scores are x_h B with x_h its binary item vector ("fold-in":
  the validation item counts as history at test time, as it does for every system). Items
  absent from the training part score lowest.
- SASRec: recfound.evaluate.sasrec (full-softmax cross-entropy).

Scores are higher-is-better; ties are broken by the protocol, not here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from recfound.config import LeaveOneOutConfig
from recfound.evaluate.sasrec import SASRec

# What an item the model cannot score gets: below every real score, above an excluded item.
LOWEST = float(np.finfo(np.float64).min)


class IdModel(Protocol):
    name: str

    def fit(self, train: Sequence[Sequence[int]], n_items: int) -> object: ...

    def scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """(len(histories), n_items) scores, higher is better."""
        ...


class Popularity:
    """Training-part interaction counts, one ranking for every user."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts = np.zeros(0)

    def fit(self, train: Sequence[Sequence[int]], n_items: int) -> Popularity:
        flat = np.fromiter((i for seq in train for i in seq), dtype=np.int64)
        self.counts = np.bincount(flat, minlength=n_items).astype(float)
        return self

    def scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), len(self.counts)))


class EASE:
    """Cornac's EASE fitted on the binary training matrix, scored by fold-in (module doc)."""

    name = "ease"

    def __init__(self, lamb: float, seed: int) -> None:
        self.lamb = lamb
        self.seed = seed
        self.n_items = 0
        self.known = np.zeros(0, dtype=np.int64)  # catalogue index of each Cornac item index
        self.weights = np.zeros((0, 0))

    def fit(self, train: Sequence[Sequence[int]], n_items: int) -> EASE:
        from cornac.data import Dataset
        from cornac.models import EASE as CornacEASE

        triples = [(str(u), str(i), 1.0) for u, seq in enumerate(train) for i in sorted(set(seq))]
        data = Dataset.build(triples, seed=self.seed)
        model = CornacEASE(lamb=self.lamb, posB=False, verbose=False, seed=self.seed)
        model.fit(data)
        self.n_items = n_items
        self.known = np.empty(len(data.iid_map), dtype=np.int64)
        for item, index in data.iid_map.items():
            self.known[index] = int(item)
        self.weights = np.asarray(model.B)
        return self

    def scores(self, histories: Sequence[Sequence[int]]) -> np.ndarray:
        position = np.full(self.n_items, -1, dtype=np.int64)
        position[self.known] = np.arange(len(self.known))
        x = np.zeros((len(histories), len(self.known)))
        for row, history in enumerate(histories):
            cols = position[np.asarray(history, dtype=np.int64)]
            x[row, cols[cols >= 0]] = 1.0
        out = np.full((len(histories), self.n_items), LOWEST)
        out[:, self.known] = x @ self.weights
        return out


def id_models(cfg: LeaveOneOutConfig, seed: int, n_items: int) -> tuple[list[IdModel], list[str]]:
    """The models of `cfg.systems` for a source of `n_items` items, and why any is skipped."""
    models: list[IdModel] = []
    skipped = []
    for name in cfg.systems:
        if name == "popularity":
            models.append(Popularity())
        elif name == "ease" and n_items > cfg.ease_max_items:
            skipped.append(f"ease: {n_items} items > evaluate.leave_one_out.ease_max_items")
        elif name == "ease":
            models.append(EASE(cfg.ease_lambda, seed))
        elif name == "sasrec":
            models.append(SASRec(cfg.sasrec, seed))
    return models, skipped
