"""The field's protocol: leave-one-out by time, full-catalogue ranking, HR@k and NDCG@k.

Beside the paper's sampled protocol (the positive among 19 sampled negatives), the way
recommendation research compares models (SASRec, BERT4Rec, LlamaRec on MovieLens):

Split. Every user of the build's sequences table (recfound.data.catalogue: every user with at
least `build.min_interactions` interactions, uncapped, oldest first) is split as the
sequence tasks split them (recfound.data.tasks.sequences `HELD_OUT`): the last interaction
-> test, the second-last -> validation, the rest -> training part. Ties in time: the build
orders interactions of the same second by item id (string order), so of two movies rated in
the same second the one with the larger id is "last". Every system sees the same split.

Ranking. A test user's query is the history before the target (training part + validation
item). It is ranked against every item of the user's source (the build's catalogue), the
items the user interacted with before the target excluded (the target itself never is: a
repeat stays findable, as in recfound.data.catalogue `SeenItems`). Ties in score fall in one
seeded random order per source (`tie_order`), so item ids favour nothing.

Metrics, binary relevance, one positive at 1-based rank r (r = ∞ beyond k):

    HR@k   = 1[r ≤ k]
    NDCG@k = 1[r ≤ k] / log2(r + 1)

(recfound.index.metrics `recall_at_k` / `ndcg_at_k` with one target), per user, so each is
a mean of per-row statistics (`RowStats.of_values`): recfound.evaluate.bootstrap gives their
percentile intervals and the paired comparisons with RecFound, one result per source.

Systems: the ID-based ones (recfound.evaluate.id_baselines: popularity, EASE, SASRec), fitted
on each source's training part; the LLM systems embed the history as the build renders a U2I
query (`history_input`, the source's U2I instruction) and search the catalogue: RecFound the
index the `index` stage wrote, base and MiniLM the catalogue as recfound.evaluate
.full_catalogue embeds it for them. Every test user is scored.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recfound.config import Config, LeaveOneOutConfig
from recfound.data.catalogue import read_catalogue, read_sequences
from recfound.data.instructions import instruction_for
from recfound.data.tasks.sequences import HELD_OUT, history_input
from recfound.evaluate.id_baselines import IdModel, id_models
from recfound.evaluate.protocol import TaskResult
from recfound.evaluate.row_stats import RowEvidence, RowStats
from recfound.index.metrics import ndcg_at_k, recall_at_k
from recfound.outputs import SEQUENCES_FILE
from recfound.tasks import BY_CODE

# The embedding task whose queries and catalogue index the LLM systems use here.
QUERY_TASK = BY_CODE["U2I"]
# Users ranked per block by the ID-based models (bounds the users x items score matrix).
SCORE_BLOCK = 512


def metric_keys(k: int) -> tuple[str, str]:
    """Keys of HR@k and NDCG@k in the protocol's results."""
    return f"HR@{k}", f"NDCG@{k}"


@dataclass(frozen=True)
class UserSplit:
    """One user's whole sequence and what the split makes of it."""

    source: str
    user_id: str
    items: tuple[str, ...]  # oldest first

    def target(self, split: str) -> str:
        """The held-out item of `split` ("test" or "validation")."""
        return self.items[len(self.items) - HELD_OUT[split]]

    def history(self, split: str) -> tuple[str, ...]:
        """What the user had before `split`'s target: the query and the exclusions."""
        return self.items[: len(self.items) - HELD_OUT[split]]

    @property
    def training_part(self) -> tuple[str, ...]:
        """The interactions a model is fitted on: all but the held-out ones."""
        return self.history("validation")

    def seen(self, split: str) -> frozenset[str]:
        """Items excluded from the ranking: the history, the target itself left out."""
        return frozenset(self.history(split)) - {self.target(split)}


class Outside(Collection[str]):
    """What a search of the whole catalogue must skip for one user: the items of other
    sources and the user's seen items (without materialising the other sources' items)."""

    def __init__(self, source_items: frozenset[str], seen: frozenset[str]) -> None:
        self.source_items = source_items
        self.seen = seen

    def __contains__(self, item: object) -> bool:
        return item not in self.source_items or item in self.seen

    def __iter__(self) -> Iterator[str]:  # only the user's own exclusions are enumerable
        return iter(self.seen)

    def __len__(self) -> int:
        return len(self.seen)


@dataclass(frozen=True)
class LeaveOneOut:
    """The split of every user, and each source's catalogue items and titles."""

    users: tuple[UserSplit, ...]
    items: dict[str, tuple[str, ...]]  # source -> its catalogue item ids (catalogue order)
    titles: dict[str, str]  # item id -> title as the build renders it
    _item_sets: dict[str, frozenset[str]] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, unified_dir: str | Path) -> LeaveOneOut:
        """From the build's sequences table and catalogue at `unified_dir`."""
        table = read_sequences(unified_dir).select(["source", "user_id", "item_ids"])
        users = tuple(
            UserSplit(source, user, tuple(items))
            for source, user, items in zip(*(c.to_pylist() for c in table.columns), strict=True)
            if len(items) >= max(HELD_OUT.values())
        )
        catalogue = read_catalogue(unified_dir).select(["item_id", "title", "source"])
        items: dict[str, list[str]] = {}
        ids, titles, sources = (c.to_pylist() for c in catalogue.columns)
        for item, source in zip(ids, sources, strict=True):
            items.setdefault(source, []).append(item)
        return cls(
            users,
            {s: tuple(v) for s, v in items.items()},
            dict(zip(ids, titles, strict=True)),
        )

    def sources(self) -> list[str]:
        """The sources with test users, sorted."""
        return sorted({u.source for u in self.users})

    def of_source(self, source: str) -> list[UserSplit]:
        return [u for u in self.users if u.source == source]

    def item_set(self, source: str) -> frozenset[str]:
        if source not in self._item_sets:
            self._item_sets[source] = frozenset(self.items.get(source, ()))
        return self._item_sets[source]


def tie_order(seed: int, source: str, n_items: int) -> np.ndarray:
    """A seeded random rank per item of `source`: the order of equal scores."""
    return np.random.default_rng([seed, zlib.crc32(source.encode("utf-8"))]).permutation(n_items)


def top_k(scores: np.ndarray, excluded: Sequence[int], k: int, ties: np.ndarray) -> list[int]:
    """Indices of the `k` best `scores` outside `excluded`, best first, equal scores in
    `ties` order."""
    scores = np.array(scores, dtype=float)
    scores[list(excluded)] = -np.inf
    k = min(k, int((scores > -np.inf).sum()))
    if k < 1:
        return []
    kth = np.partition(scores, len(scores) - k)[len(scores) - k]
    candidates = np.flatnonzero((scores >= kth) & (scores > -np.inf))
    order = np.lexsort((ties[candidates], -scores[candidates]))
    return candidates[order][:k].tolist()


def ranking_stats(
    ranked: Sequence[Sequence[str]], targets: Sequence[str], ks: Sequence[int]
) -> dict[str, RowStats]:
    """Per-user HR@k and NDCG@k of each k (one target each)."""
    stats = {}
    for k in ks:
        hr, ndcg = metric_keys(k)
        stats[hr] = RowStats.of_values(recall_at_k(ranked, [[t] for t in targets], k))
        stats[ndcg] = RowStats.of_values(ndcg_at_k(ranked, [[t] for t in targets], k))
    return stats


def source_result(
    source: str, users: Sequence[UserSplit], ranked: Sequence[Sequence[str]], ks: Sequence[int]
) -> TaskResult:
    """One system's result on one source's test users, with its per-user statistics."""
    stats = ranking_stats(ranked, [u.target("test") for u in users], ks)
    evidence = RowEvidence(tuple(u.user_id for u in users), tuple(source for _ in users), stats)
    primary = metric_keys(min(ks))[1]
    return TaskResult(source, primary, evidence.point_estimates(), len(users), evidence=evidence)


def rank_id_model(
    model: IdModel, data: LeaveOneOut, source: str, k: int, seed: int
) -> list[list[str]]:
    """Fit `model` on `source`'s training part; each test user's top `k` item ids."""
    items = data.items[source]
    index = {item: i for i, item in enumerate(items)}
    users = data.of_source(source)
    model.fit([[index[i] for i in u.training_part] for u in users], len(items))
    ties = tie_order(seed, source, len(items))
    ranked = []
    for start in range(0, len(users), SCORE_BLOCK):
        block = users[start : start + SCORE_BLOCK]
        scores = model.scores([[index[i] for i in u.history("test")] for u in block])
        for user, row in zip(block, scores, strict=True):
            excluded = [index[i] for i in user.seen("test")]
            ranked.append([items[j] for j in top_k(row, excluded, k, ties)])
    return ranked


def query_rows(data: LeaveOneOut, users: Sequence[UserSplit], max_history: int) -> list[dict]:
    """Each test user's history as the build renders a U2I query (input and instruction)."""
    return [
        {
            "id": f"leave_one_out:{u.user_id}",
            "input": history_input(
                u.items, len(u.items) - HELD_OUT["test"], max_history, data.titles.__getitem__
            ),
            "instruction": instruction_for(QUERY_TASK.code, u.source),
        }
        for u in users
    ]


@dataclass
class FieldRun:
    """The leave-one-out results of one evaluate run: system -> source -> TaskResult."""

    data: LeaveOneOut
    cfg: LeaveOneOutConfig
    seed: int
    max_history: int
    results: dict[str, dict[str, TaskResult]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def prepare(cls, cfg: Config) -> FieldRun | None:
        """The split of the build at `paths.unified`; None (and why, printed) when the
        protocol is off or the build wrote no sequences table."""
        settings = cfg.evaluate.leave_one_out
        if not settings.enabled:
            print("leave-one-out protocol skipped: evaluate.leave_one_out.enabled is false")
            return None
        if not (Path(cfg.paths.unified) / SEQUENCES_FILE).is_file():
            print("leave-one-out protocol skipped: no sequence task in the build")
            return None
        data = LeaveOneOut.read(cfg.paths.unified)
        if not data.users:
            print("leave-one-out protocol skipped: no user with a test interaction")
            return None
        return cls(data, settings, cfg.seed, cfg.build.max_history)

    @property
    def k(self) -> int:
        return max(self.cfg.k)

    def add_id_models(self) -> None:
        """Fit and score `evaluate.leave_one_out.systems` on every source."""
        for source in self.data.sources():
            models, skipped = id_models(self.cfg, self.seed, len(self.data.items[source]))
            self.notes += [f"{source}: {why}" for why in skipped]
            for model in models:
                print(f"leave-one-out: {model.name} on {source}")
                ranked = rank_id_model(model, self.data, source, self.k, self.seed)
                self.keep(model.name, source, ranked)

    def add_llm(self, system: Any, catalogue: Any, saved_index: bool) -> None:
        """Score an embedding system (an LLMSystem or MiniLM) through `catalogue` (a
        recfound.evaluate.full_catalogue.FullCatalogue): the index stage's U2I index when
        `saved_index`, else the catalogue embedded as for full-catalogue retrieval."""
        from recfound.evaluate.full_catalogue import query_vectors

        if catalogue is None or QUERY_TASK.code not in catalogue.exclusions:
            self.notes.append(f"{system.name}: no U2I full-catalogue search in this run")
            return
        index = (
            catalogue.saved_index(QUERY_TASK)
            if saved_index
            else catalogue.embedded_index(system, QUERY_TASK)
        )
        for source in self.data.sources():
            users = self.data.of_source(source)
            rows = query_rows(self.data, users, self.max_history)
            print(f"leave-one-out: {system.name} on {source}, {len(rows)} users")
            vectors = query_vectors(system, QUERY_TASK, rows)
            exclusions = [Outside(self.data.item_set(source), u.seen("test")) for u in users]
            self.keep(system.name, source, index.search(vectors, self.k, exclusions).ids)

    def keep(self, name: str, source: str, ranked: Sequence[Sequence[str]]) -> None:
        """Record `name`'s top-k ids of each of `source`'s test users (in `of_source` order)."""
        users = self.data.of_source(source)
        result = source_result(source, users, ranked, self.cfg.k)
        self.results.setdefault(name, {})[source] = result
