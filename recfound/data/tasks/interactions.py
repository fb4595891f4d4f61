"""User behaviour as compact per-user sequences: the only thing kept of every review.

Reviews (Amazon) and ratings (MovieLens) stream through once; each interaction leaves four
numbers in typed arrays (user index, item index, timestamp, rating), about 20 bytes, never its
text. Sorting those arrays by (user id, time, item id) gives every user's time-ordered
sequence, independent of the order the files list them in.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from recfound.data.readers import RawSources, read_ratings, read_reviews
from recfound.data.records import Review
from recfound.data.tasks.catalog import Catalog, scoped_id
from recfound.data.tasks.common import progress

AMAZON = "amazon_reviews"
MOVIELENS = "movielens"


@dataclass(frozen=True)
class UserSequence:
    """One user's interactions, oldest first."""

    user_id: str
    source: str
    items: tuple[str, ...]
    ratings: tuple[float, ...]
    timestamps: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.items)


class _Index:
    """String id <-> dense int index, in first-seen order."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, key: str) -> int:
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.ids)
            self.ids.append(key)
        return index

    def get(self, key: str) -> int | None:
        return self._index.get(key)

    def ranks(self) -> np.ndarray:
        """rank[i] = position of ids[i] in sorted order (a file-order-free tie-break)."""
        order = sorted(range(len(self.ids)), key=self.ids.__getitem__)
        ranks = np.empty(len(order), dtype=np.int64)
        ranks[order] = np.arange(len(order))
        return ranks


class InteractionLog:
    """Append-only log of (user, item, timestamp, rating); `sequences()` sorts it."""

    def __init__(self) -> None:
        self._users = _Index()
        self._items = _Index()
        self._user_source: dict[int, str] = {}
        self._u = array("q")
        self._i = array("q")
        self._t = array("q")
        self._r = array("f")
        self.skipped = 0  # interactions whose item the catalogue lacks

    def add(self, user_id: str, item_id: str, timestamp: int, rating: float, source: str) -> None:
        user = self._users(user_id)
        self._user_source.setdefault(user, source)
        self._u.append(user)
        self._i.append(self._items(item_id))
        self._t.append(timestamp)
        self._r.append(rating)

    def __len__(self) -> int:
        return len(self._u)

    def sequences(self) -> Sequences:
        users = np.array(self._u, dtype=np.int64)
        items = np.array(self._i, dtype=np.int64)
        times = np.array(self._t, dtype=np.int64)
        ratings = np.array(self._r, dtype=np.float32)
        user_rank, item_rank = self._users.ranks(), self._items.ranks()
        order = np.lexsort((item_rank[items], times, user_rank[users]))
        sources = [self._user_source[u] for u in range(len(self._users.ids))]
        return Sequences(
            self._users.ids,
            sources,
            self._items,
            users[order],
            items[order],
            times[order],
            ratings[order],
        )


class Sequences:
    """Every user's time-ordered interactions, users in id order."""

    def __init__(
        self,
        user_ids: list[str],
        user_sources: list[str],
        item_index: _Index,
        users: np.ndarray,
        items: np.ndarray,
        times: np.ndarray,
        ratings: np.ndarray,
    ) -> None:
        self._user_ids = user_ids
        self._user_sources = user_sources
        self._item_index = item_index
        self._items = items
        self._times = times
        self._ratings = ratings
        # Contiguous run of each user in the sorted arrays.
        change = np.flatnonzero(np.diff(users)) + 1
        self._starts = np.concatenate(([0], change)) if len(users) else change
        self._ends = np.concatenate((change, [len(users)])) if len(users) else change
        self._run_users = users[self._starts]
        self._run_of: dict[str, int] | None = None
        # Co-purchases: distinct (item, next item of the same user) pairs with their counts,
        # sorted by item, so one item's followers are a binary search away.
        same_user = users[1:] == users[:-1]
        first, second = items[:-1][same_user], items[1:][same_user]
        keep = first != second
        pairs, counts = np.unique(
            np.stack([first[keep], second[keep]], axis=1).reshape(-1, 2), axis=0, return_counts=True
        )
        self._pair_first, self._pair_second, self._pair_counts = pairs[:, 0], pairs[:, 1], counts

    def __len__(self) -> int:
        return len(self._starts)

    def lengths(self) -> dict[str, int]:
        """user id -> number of interactions, users in id order."""
        sizes = (self._ends - self._starts).tolist()
        return {self._user_ids[int(u)]: n for u, n in zip(self._run_users, sizes, strict=True)}

    def get(self, user_id: str) -> UserSequence:
        """One user's sequence, materialised on demand (the arrays stay compact)."""
        if self._run_of is None:
            self._run_of = {self._user_ids[int(u)]: r for r, u in enumerate(self._run_users)}
        run = self._run_of[user_id]
        start, end = self._starts[run], self._ends[run]
        user = int(self._run_users[run])
        return UserSequence(
            user_id=user_id,
            source=self._user_sources[user],
            items=tuple(self._item_index.ids[i] for i in self._items[start:end]),
            ratings=tuple(float(r) for r in self._ratings[start:end]),
            timestamps=tuple(int(t) for t in self._times[start:end]),
        )

    def items_with_followers(self) -> list[str]:
        """Items some user bought something else right after."""
        return [self._item_index.ids[i] for i in np.unique(self._pair_first).tolist()]

    def co_purchased(self, item_id: str) -> list[tuple[str, int]]:
        """[(item bought right after `item_id` by the same user, how often)], most often first."""
        index = self._item_index.get(item_id)
        if index is None:
            return []
        lo, hi = np.searchsorted(self._pair_first, [index, index + 1])
        followers = [
            (self._item_index.ids[b], n)
            for b, n in zip(
                self._pair_second[lo:hi].tolist(), self._pair_counts[lo:hi].tolist(), strict=True
            )
        ]
        return sorted(followers, key=lambda pair: (-pair[1], pair[0]))


ReviewObserver = Callable[[str, Review], None]


def load_interactions(
    sources: RawSources, catalog: Catalog, observers: Iterable[ReviewObserver] = ()
) -> InteractionLog:
    """Stream every review file and MovieLens ratings file into an InteractionLog.

    Each observer sees every (category, Review) as it streams by; interactions with items the
    catalogue lacks are counted in `skipped` (no text to show for them).
    """
    log = InteractionLog()
    observers = tuple(observers)
    for files in sources.amazon_reviews:
        for review in progress(read_reviews(files.reviews), f"reviews {files.category}"):
            for observe in observers:
                observe(files.category, review)
            if review.parent_asin not in catalog:
                log.skipped += 1
                continue
            log.add(review.user_id, review.parent_asin, review.timestamp, review.rating, AMAZON)
    for files in sources.movielens:
        for rating in progress(read_ratings(files.ratings), f"ratings {files.variant}"):
            item = scoped_id(files.variant, rating.item_id)
            if item not in catalog:
                log.skipped += 1
                continue
            user = scoped_id(files.variant, rating.user_id)
            log.add(user, item, rating.timestamp, rating.rating, MOVIELENS)
    return log
