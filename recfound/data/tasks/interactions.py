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
from functools import cached_property
from pathlib import Path

import numpy as np

from recfound.data.ingest import (
    CONFLICTING_DUPLICATE,
    DUPLICATE,
    NO_METADATA,
    SHORT_USER,
    UNKNOWN_USER,
    FileCounts,
    IngestReport,
)
from recfound.data.readers import (
    MovieLensFiles,
    RawSources,
    read_movie_users,
    read_ratings,
    read_reviews,
)
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

    @cached_property
    def item_set(self) -> frozenset[str]:
        """Every item the user interacted with (computed once per sequence)."""
        return frozenset(self.items)


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
    """Append-only log of (user, item, timestamp, rating, file); `sequences()` sorts it.

    Duplicates (same user, item and time) are removed when sorting: the one listed last is
    kept, and each removed row is counted against its file as an exact or a conflicting
    (other rating) duplicate.
    """

    def __init__(self, report: IngestReport | None = None) -> None:
        self._users = _Index()
        self._items = _Index()
        self._user_source: dict[int, str] = {}
        self._files: list[FileCounts] = []
        self.report = report or IngestReport()
        self._u = array("q")
        self._i = array("q")
        self._t = array("q")
        self._r = array("f")
        self._f = array("H")  # index into _files

    def file(self, source: str, path: Path) -> int:
        """Register a raw file; its index is passed to `add`."""
        self._files.append(self.report.file(source, path))
        return len(self._files) - 1

    def add(
        self, user_id: str, item_id: str, timestamp: int, rating: float, source: str, file: int
    ) -> None:
        user = self._users(user_id)
        self._user_source.setdefault(user, source)
        self._u.append(user)
        self._i.append(self._items(item_id))
        self._t.append(timestamp)
        self._r.append(rating)
        self._f.append(file)

    def __len__(self) -> int:
        return len(self._u)

    def sequences(self) -> Sequences:
        users = np.array(self._u, dtype=np.int64)
        items = np.array(self._i, dtype=np.int64)
        times = np.array(self._t, dtype=np.int64)
        ratings = np.array(self._r, dtype=np.float32)
        files = np.array(self._f, dtype=np.int64)
        user_rank, item_rank = self._users.ranks(), self._items.ranks()
        # Arrival order last: among duplicates, the one listed last sorts last and is kept.
        arrival = np.arange(len(users))
        order = np.lexsort((arrival, item_rank[items], times, user_rank[users]))
        users, items, times, ratings, files = (
            a[order] for a in (users, items, times, ratings, files)
        )
        keep = self._drop_duplicates(users, items, times, ratings, files)
        sources = [self._user_source[u] for u in range(len(self._users.ids))]
        return Sequences(
            self._users.ids,
            sources,
            self._items,
            users[keep],
            items[keep],
            times[keep],
            ratings[keep],
            files[keep],
            self._files,
        )

    def _drop_duplicates(
        self,
        users: np.ndarray,
        items: np.ndarray,
        times: np.ndarray,
        ratings: np.ndarray,
        files: np.ndarray,
    ) -> np.ndarray:
        """Mask of the rows to keep: a row equal to the next on (user, item, time) goes."""
        same_next = (
            (users[:-1] == users[1:]) & (items[:-1] == items[1:]) & (times[:-1] == times[1:])
        )
        for index in np.flatnonzero(same_next).tolist():
            reason = DUPLICATE if ratings[index] == ratings[index + 1] else CONFLICTING_DUPLICATE
            self._files[int(files[index])].drop(reason, self._describe(users, items, times, index))
        return np.concatenate((~same_next, [True])) if len(users) else np.ones(0, dtype=bool)

    def _describe(self, users: np.ndarray, items: np.ndarray, times: np.ndarray, index: int) -> str:
        return (
            f"user {self._users.ids[int(users[index])]}, item {self._items.ids[int(items[index])]}"
            f", time {int(times[index])}"
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
        files: np.ndarray,
        file_counts: list[FileCounts],
    ) -> None:
        self._user_ids = user_ids
        self._files = files
        self._file_counts = file_counts
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

    def count_short_users(self, min_interactions: int) -> None:
        """Count, per file, the interactions of users with fewer than `min_interactions`."""
        lengths = self._ends - self._starts
        for run in np.flatnonzero(lengths < min_interactions).tolist():
            start, end = int(self._starts[run]), int(self._ends[run])
            user = self._user_ids[int(self._run_users[run])]
            for file, n in zip(*np.unique(self._files[start:end], return_counts=True), strict=True):
                self._file_counts[int(file)].drop(
                    SHORT_USER, f"user {user} ({end - start} interactions)", n=int(n)
                )

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


ReviewObserver = Callable[[str, Review, str], None]


def movie_users(files: MovieLensFiles, report: IngestReport) -> frozenset[str] | None:
    """The user ids a MovieLens set's users file lists; None for a set without one (CSV sets).

    Read so that a rating by a user the file does not list is dropped and counted
    (UNKNOWN_USER) rather than taken in silently: such ratings mean a users file of another
    copy or a damaged ratings file. The ids are a few thousand strings, even for ml-1m.
    """
    if files.users is None:
        return None
    counts = report.file(MOVIELENS, files.users)
    users = set()
    for user in read_movie_users(files.users, notes=counts.notes):
        counts.read += 1
        users.add(user.user_id)
    return frozenset(users)


def load_interactions(
    sources: RawSources,
    catalog: Catalog,
    observers: Iterable[ReviewObserver] = (),
    report: IngestReport | None = None,
) -> InteractionLog:
    """Stream every review file and MovieLens ratings file into an InteractionLog.

    Each observer sees every (category, Review, source) as it streams by; interactions with
    items the catalogue lacks are dropped and counted in the ingest report (no text to show),
    and so are MovieLens ratings by users the set's users file does not list.
    """
    log = InteractionLog(report)
    observers = tuple(observers)
    for source, files in sources.amazon_categories():
        file = log.file(source, files.reviews)
        counts = log.report.file(source, files.reviews)
        for review in progress(read_reviews(files.reviews), f"reviews {files.category}"):
            counts.read += 1
            for observe in observers:
                observe(files.category, review, source)
            if review.parent_asin not in catalog:
                counts.drop(NO_METADATA, f"user {review.user_id}, item {review.parent_asin}")
                continue
            log.add(
                review.user_id, review.parent_asin, review.timestamp, review.rating, source, file
            )
    for files in sources.movielens:
        known_users = movie_users(files, log.report)
        file = log.file(MOVIELENS, files.ratings)
        counts = log.report.file(MOVIELENS, files.ratings)
        for rating in progress(
            read_ratings(files.ratings, notes=counts.notes), f"ratings {files.variant}"
        ):
            counts.read += 1
            item = scoped_id(files.variant, rating.item_id)
            if item not in catalog:
                counts.drop(NO_METADATA, f"user {rating.user_id}, movie {rating.item_id}")
                continue
            if known_users is not None and rating.user_id not in known_users:
                counts.drop(UNKNOWN_USER, f"user {rating.user_id}, movie {rating.item_id}")
                continue
            user = scoped_id(files.variant, rating.user_id)
            log.add(user, item, rating.timestamp, rating.rating, MOVIELENS, file)
    return log
