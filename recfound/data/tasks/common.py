"""What every task builder shares: stable ids and ranks, split allocation, rows, negatives.

Selection is by seeded hash rank, never by file order or Python's `hash`: a candidate's rank is
blake2b(seed, task, its source keys), and a split takes the lowest-ranked candidates. So the
same raw data and seed give the same rows and ids on any machine, whatever order the files
list their records in, and a bounded heap (`BottomK`) can select from a stream.
"""

from __future__ import annotations

import hashlib
import heapq
import mmap
import pickle
import random
import tempfile
from array import array
from collections.abc import Callable, Container, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import count
from typing import Generic, TypeVar

import numpy as np

from recfound.config import BuildConfig
from recfound.data.instructions import instruction_for
from recfound.progress import progress as progress_bar
from recfound.tasks import task_by_code

T = TypeVar("T")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
YES, NO = "yes", "no"
SPLIT_ORDER = ("test", "validation", "train")
# Negatives: candidates drawn per wanted negative before scanning the whole pool.
DRAW_FACTOR = 4  # test is filled first: it gets the rarest rows


def progress(records: Iterable[T], desc: str) -> Iterator[T]:
    """Stream `records` with a progress bar (recfound.progress: lines in a log)."""
    yield from progress_bar(records, desc=desc, unit="rec", mininterval=1.0, leave=False)


def _digest(parts: Iterable[object], size: int) -> bytes:
    text = "\x1f".join(str(p) for p in parts)  # unit separator: no key can fake a boundary
    return hashlib.blake2b(text.encode("utf-8"), digest_size=size).digest()


def rank(*parts: object) -> int:
    """A 64-bit seeded rank for ordering candidates: lower ranks are selected first."""
    return int.from_bytes(_digest(parts, 8), "big")


def row_id(task: str, *keys: object) -> str:
    """The stable id of a row: a hash of the task code and the row's source keys."""
    return _digest((task, *keys), 10).hex()


def rng_for(*parts: object) -> random.Random:
    """A generator seeded by the parts (string seeds are hashed with SHA-512 by CPython)."""
    return random.Random("\x1f".join(str(p) for p in parts))


def clip(text: str, limit: int) -> str:
    """`text` with whitespace collapsed, cut to at most `limit` characters at a word end."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0] or text[: limit - 1]
    return cut + "…"


@dataclass(frozen=True)
class SplitSizes:
    """How many rows a task wants per split; None = every row the data yields.

    The test split always has a size: it is the seeded sample taken first (lowest ranks), so
    it does not move when the train or validation caps change. An uncapped validation split
    takes every `validation_every`-th candidate after test (the first one included), the rest
    go to train.
    """

    train: int | None
    validation: int | None
    test: int
    validation_every: int = 20

    @classmethod
    def of(cls, cfg: BuildConfig, code: str | None = None) -> SplitSizes:
        """The sizes of task `code`: an embedding task's test split is
        `build.embedding_test_per_task`, any other's `build.test_per_task`."""
        every = max(1, round(1 / cfg.validation_share))
        embedding = code is not None and task_by_code(code).is_embedding
        test = cfg.embedding_test_per_task if embedding else cfg.test_per_task
        return cls(cfg.train_per_task, cfg.validation_per_task, test, every)

    def get(self, split: str) -> int | None:
        return getattr(self, split)

    @property
    def total(self) -> int | None:
        """Rows wanted in all splits together; None when a split is uncapped."""
        if self.train is None or self.validation is None:
            return None
        return self.train + self.validation + self.test

    def full(self, split: str, filled: int) -> bool:
        cap = self.get(split)
        return cap is not None and filled >= cap


class BottomK(Generic[T]):
    """The k candidates of lowest rank seen in a stream (memory: k candidates).

    k None keeps every candidate, spilled to disk (memory: 24 bytes each), so an uncapped
    task over millions of records stays bounded. Ties in rank keep the earlier candidate
    first, so exact duplicates stay side by side.
    """

    def __init__(self, k: int | None) -> None:
        self.k = k
        self._heap: list[tuple[int, int, T]] = []  # (-rank, -arrival, item): a max-heap
        self._arrival = count()
        self._spill = SpilledRanking[T]() if k is None else None

    def offer(self, key: int, item: T) -> None:
        if self._spill is not None:
            self._spill.add(key, item)
            return
        entry = (-key, -next(self._arrival), item)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def ranked(self) -> Iterator[T]:
        """The kept candidates, lowest rank first."""
        if self._spill is not None:
            return self._spill.ranked()
        return iter([item for _, _, item in sorted(self._heap, key=lambda e: (-e[0], -e[1]))])

    def __len__(self) -> int:
        return len(self._spill) if self._spill is not None else len(self._heap)


class SpilledRanking(Generic[T]):
    """Every candidate offered, pickled to a temporary file; read back in rank order.

    In memory: rank, offset and size per candidate. The file is removed when this object
    is collected (tempfile.TemporaryFile).
    """

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()  # noqa: SIM115 - open as long as the ranking lives
        self._ranks = array("Q")
        self._offsets = array("q")
        self._sizes = array("q")

    def add(self, key: int, item: T) -> None:
        data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
        self._offsets.append(self._file.tell())
        self._sizes.append(len(data))
        self._ranks.append(key)
        self._file.write(data)

    def __len__(self) -> int:
        return len(self._ranks)

    def ranked(self) -> Iterator[T]:
        """Candidates by rank, ties in arrival order (a stable sort)."""
        if not self._ranks:
            return
        self._file.flush()
        order = np.argsort(np.frombuffer(self._ranks, dtype=np.uint64), kind="stable")
        with mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ) as view:
            for index in order.tolist():
                start = self._offsets[index]
                yield pickle.loads(view[start : start + self._sizes[index]])


RowStream = Iterator[tuple[str, dict]]  # (split, unified row), a task's test rows first


def fill_splits(
    ranked: Iterable[T],
    sizes: SplitSizes,
    make: Callable[[str, T], dict | None],
    split_of: Callable[[T], Sequence[str]] | None = None,
) -> RowStream:
    """Turn ranked candidates into (split, row): test first, then validation, then train.

    `make(split, candidate)` returns a row or None (the candidate cannot make one, e.g. too
    few negatives: the next candidate takes its place). `split_of` limits the splits a
    candidate may go to (a source's own split), default any. With an uncapped validation
    split, every `sizes.validation_every`-th candidate past test goes to validation.
    """
    filled = dict.fromkeys(SPLIT_ORDER, 0)
    past_test = 0  # candidates offered to validation/train in share mode
    for candidate in ranked:
        allowed = split_of(candidate) if split_of else SPLIT_ORDER
        for split in SPLIT_ORDER:
            if split not in allowed or sizes.full(split, filled[split]):
                continue
            if split == "validation" and sizes.validation is None:
                past_test += 1
                if (past_test - 1) % sizes.validation_every:
                    continue  # not this candidate's turn: it goes to train
            row = make(split, candidate)
            if row is not None:
                filled[split] += 1
                yield split, row
            break
        if all(sizes.full(s, filled[s]) for s in SPLIT_ORDER):
            return


def interleave(classes: dict[str, Iterable[T]]) -> Iterator[T]:
    """Round-robin over the classes (sorted by name), each in its own order: balanced labels.

    Lazy: each class is read as far as the round-robin gets (classes may be spilled streams).
    """
    streams = [iter(classes[name]) for name in sorted(classes)]
    while streams:
        alive = []
        for stream in streams:
            item = next(stream, _END)
            if item is not _END:
                alive.append(stream)
                yield item
        streams = alive


_END = object()


def make_row(
    code: str,
    keys: Sequence[object],
    *,
    input: str,
    target_key: str,
    source: str,
    output: str = "",
    options: Sequence[str] = (),
    option_ids: Sequence[str] = (),
    positives: Sequence[str] = (),
    positive_ids: Sequence[str] = (),
    negatives: Sequence[str] = (),
    negative_ids: Sequence[str] = (),
    category: str = "",
    user_id: str = "",
) -> dict:
    """One unified row (recfound/data/schema.py) of task `code`, its id hashed from `keys`."""
    task = task_by_code(code)
    return {
        "id": row_id(code, *keys),
        "task_id": task.id,
        "task": task.code,
        "kind": task.kind.value,
        "instruction": instruction_for(task.code, source),
        "input": input,
        "output": output,
        "options": list(options),
        "option_ids": list(option_ids),
        "positives": list(positives),
        "positive_ids": list(positive_ids),
        "negatives": list(negatives),
        "negative_ids": list(negative_ids),
        "category": category,
        "user_id": user_id,
        "target_key": f"{code}:{target_key}",
        "source": source,
    }


class CategoryPools:
    """Item ids per category, for drawing same-category negatives."""

    def __init__(self, category_of: dict[str, str]) -> None:
        self._category_of = category_of
        pools: dict[str, list[str]] = {}
        for item_id in sorted(category_of):
            pools.setdefault(category_of[item_id], []).append(item_id)
        self._pools = {category: tuple(ids) for category, ids in pools.items()}

    def sample(
        self,
        category: str,
        k: int,
        exclude: Container[str],
        rng: random.Random,
        prefer: Sequence[str] = (),
    ) -> list[str] | None:
        """`k` distinct ids of `category` not in `exclude`, `prefer`red ones first (those of
        the same category only); None when the category cannot supply `k`."""
        pool = self._pools.get(category, ())
        chosen = [
            item
            for item in dict.fromkeys(prefer)
            if self._category_of.get(item) == category and item not in exclude
        ][:k]
        taken = set(chosen)
        for index in _draw_order(rng, len(pool), DRAW_FACTOR * k):
            if len(chosen) == k:
                break
            item = pool[index]
            if item not in exclude and item not in taken:
                chosen.append(item)
                taken.add(item)
        return chosen if len(chosen) == k else None


def _draw_order(rng: random.Random, n: int, first: int) -> Iterator[int]:
    """Random indices into a pool of `n`: a short draw of `first`, then (only if the caller
    reads on, because excluded ids crowd the pool) a full random permutation."""
    yield from rng.sample(range(n), min(n, first))
    yield from rng.sample(range(n), n)
