"""Full-catalogue retrieval metrics of the embedding tasks, beside the paper's sampled ones.

The paper ranks each test row's positive among its 19 sampled negatives (MRR@20, NDCG@20). A
deployed recommender searches the whole catalogue, so `evaluate` scores that too: each test
row's query against every item of the build's catalogue (recfound.data.catalogue), skipping
the row's excluded items (`excluded_ids`: U2I what the user had before the target, I2I the
query item, Q2I none), the top k ids r_1..r_k against the row's positive ids P
(recfound.index.metrics), for each k of `evaluate.catalogue_k`:

    Recall@k_full = |{r_1..r_k} ∩ P| / |P|
    NDCG@k_full   = Σ_{i≤k, r_i ∈ P} 1/log2(i + 1)  /  Σ_{i≤min(k, |P|)} 1/log2(i + 1)

Both are per-row means (`RowStats.of_values`) added to the task's result beside the sampled
metric (`protocol.with_row_stats`), so the bootstrap intervals, the paired comparisons with
RecFound, the per-source results and the evidence files cover them like every other metric.

Where each system's ranking comes from:

- RecFound: the index the `index` stage wrote for the task (`paths.index/<TASK>`, the merged
  model's catalogue vectors), searched with the query vectors the same model embedded for the
  sampled protocol (each query is embedded once per system and run). It must have
  been built from this merged model and this catalogue (`recfound.index.stage.fingerprints`).
- base model, MiniLM: the catalogue embedded here with the system's own embedder, searched
  exactly (faiss IndexFlatIP) with the query vectors of its sampled protocol. Neither routes
  by task, so one embedding serves all three tasks.
- popularity (U2I only, as in the sampled protocol): one ranking for every user, the catalogue
  by training target counts (`PopularitySystem.catalogue_order`), less the user's seen items.
Before a system's sampled protocol runs, `share_vectors` hands it the catalogue vectors of the
index it will search, so its pool scoring embeds no catalogue item again
(recfound.evaluate.systems.PassageVectors).

- RecFound w/o Model Merge and random get none: w/o merge would need three catalogue passes of
  its own (one per task: TMoLE routes passages too), as costly as the index stage; a random
  ranking's Recall@k is k / |catalogue| in expectation.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recfound.config import Config, IndexConfig
from recfound.data.catalogue import excluded_ids, read_catalogue, read_seen
from recfound.evaluate.protocol import SystemRun, full_catalogue_metrics, with_row_stats
from recfound.evaluate.row_stats import RowStats
from recfound.evaluate.systems import Row, embed_queries, routing_key
from recfound.index.embed import embed_catalogue
from recfound.index.metrics import ndcg_at_k, recall_at_k
from recfound.index.stage import fingerprints, load_task_index
from recfound.index.store import CatalogueIndex
from recfound.merge.layout import merged_adapter_dir
from recfound.tasks import BY_CODE, Task


def ranking_stats(
    ranked: Sequence[Sequence[str]], rows: Sequence[Row], ks: Sequence[int]
) -> dict[str, RowStats]:
    """Per-row Recall@k and NDCG@k of each k, the rows' positive ids as targets."""
    targets = [row["positive_ids"] for row in rows]
    stats = {}
    for k in ks:
        recall, ndcg = full_catalogue_metrics(k)
        stats[recall] = RowStats.of_values(recall_at_k(ranked, targets, k))
        stats[ndcg] = RowStats.of_values(ndcg_at_k(ranked, targets, k))
    return stats


def query_vectors(system: Any, task: Task, rows: Sequence[Row]) -> np.ndarray:
    """The rows' query vectors as `system` embeds them: those its pool scoring embedded
    (`query_vectors`, one embedding per query and run) when it keeps them, else embedded now."""
    if hasattr(system, "query_vectors"):
        return system.query_vectors(task, rows)
    return embed_queries(rows, system.embedder(task, progress=False))


def first_k_outside(
    order: Sequence[str], exclusions: Sequence[Collection[str]], k: int
) -> list[list[str]]:
    """Per row: the first `k` ids of the shared ranking `order` that the row does not exclude."""
    ranked = []
    for excluded in exclusions:
        kept: list[str] = []
        for item in order:
            if item not in excluded:
                kept.append(item)
                if len(kept) == k:
                    break
        ranked.append(kept)
    return ranked


@dataclass
class FullCatalogue:
    """The catalogue and each test row's exclusions, read once per evaluate run, and the
    catalogue indexes embedded so far (per system, and per task for task-routed systems)."""

    item_ids: list[str]
    passages: list[str]
    exclusions: dict[str, list[frozenset[str]]]  # task code -> per test row
    ks: tuple[int, ...]
    index_cfg: IndexConfig
    index_dir: Path  # paths.index: the index stage's <TASK>/ directories
    # What the index stage's indexes must have been built from: the merged model evaluated
    # here and this catalogue (recfound.index.stage.fingerprints)
    built_from: dict[str, str]
    _embedded: dict[tuple[str, str], CatalogueIndex] = field(default_factory=dict, repr=False)

    @classmethod
    def prepare(cls, cfg: Config, test: Mapping[str, Sequence[Row]]) -> FullCatalogue | None:
        """Read the catalogue and the exclusions of the embedding tasks' test rows; None when
        `evaluate.catalogue_k` is empty or no embedding task has test rows."""
        codes = [code for code in test if BY_CODE[code].is_embedding]
        if not cfg.evaluate.catalogue_k or not codes:
            why = "evaluate.catalogue_k is empty" if codes else "no embedding task"
            print(f"full-catalogue retrieval metrics skipped: {why}")
            return None
        unified = Path(cfg.paths.unified)
        table = read_catalogue(unified)
        seen = read_seen(unified, [row["id"] for row in test["U2I"]]) if "U2I" in codes else None
        return cls(
            item_ids=table["item_id"].to_pylist(),
            passages=table["passage"].to_pylist(),
            exclusions={code: excluded_ids(code, test[code], seen) for code in codes},
            ks=tuple(cfg.evaluate.catalogue_k),
            index_cfg=cfg.index,
            index_dir=Path(cfg.paths.index),
            built_from=fingerprints(cfg.paths.base_model, merged_adapter_dir(cfg), table),
        )

    def saved_index(self, task: Task) -> CatalogueIndex:
        """The index stage's index of `task`; IndexNotCurrent when it is missing or was built
        from another model or catalogue than evaluated here."""
        return load_task_index(self.index_dir, task.code, self.index_cfg, self.built_from)

    def embedded_index(self, system: Any, task: Task) -> CatalogueIndex:
        """An exact index of the catalogue as `system` embeds it, built once per system (and
        per task when the system routes by task) in this run."""
        routed = getattr(system, "routes_tasks", True)
        key = (system.name, routing_key(system, task))
        if key not in self._embedded:
            print(
                f"full catalogue: embedding {len(self.item_ids)} items with {system.name}"
                + (f" for {task.code}" if routed else " (shared by the embedding tasks)")
            )
            # the embedder's bar counts texts within each of embed_catalogue's chunks
            embed = system.embedder(task, progress=True, batch_size=self.index_cfg.batch_size)
            vectors = embed_catalogue(self.passages, embed, self.index_cfg.chunk_items)
            self._embedded[key] = CatalogueIndex.build(
                vectors, self.item_ids, self.index_cfg, kind="exact"
            )
        return self._embedded[key]

    def index_of(self, system: Any, task: Task, saved_index: bool) -> CatalogueIndex:
        """The catalogue index `system` is searched with: the index stage's (`saved_index`)
        or one embedded here (`embedded_index`)."""
        return self.saved_index(task) if saved_index else self.embedded_index(system, task)

    def share_vectors(self, system: Any, saved_index: bool = False) -> None:
        """Give `system` (one holding `passages`, a PassageVectors) the catalogue vectors of
        each embedding task it answers, from the index it will be searched with, so its pool
        scoring reuses them instead of embedding catalogue items again."""
        if not hasattr(system, "passages"):
            return
        passage_of = dict(zip(self.item_ids, self.passages, strict=True))
        for code in self.exclusions:
            task = BY_CODE[code]
            if system.supports(task):
                index = self.index_of(system, task, saved_index)
                texts = [passage_of[item] for item in index.ids]
                system.passages.keep(routing_key(system, task), texts, index.vectors())

    def ranked(
        self, system: Any, task: Task, rows: Sequence[Row], saved_index: bool
    ) -> list[list[str]]:
        """Per row, the catalogue's top max(ks) ids for `system`, the row's exclusions skipped:
        by the system's own ranking (`catalogue_order`) or by searching an index of its
        catalogue vectors (`saved_index`: the index stage's, else embedded here)."""
        k = max(self.ks)
        exclusions = self.exclusions[task.code]
        if hasattr(system, "catalogue_order"):
            return first_k_outside(system.catalogue_order(self.item_ids, task), exclusions, k)
        index = self.index_of(system, task, saved_index)
        return index.search(query_vectors(system, task, rows), k, exclusions).ids

    def add_metrics(
        self,
        run: SystemRun,
        system: Any,
        test: Mapping[str, Sequence[Row]],
        saved_index: bool = False,
    ) -> SystemRun:
        """`run` with the full-catalogue metrics of every embedding task it has a result of.

        `system` ranks the catalogue through `catalogue_order(item_ids, task)` (one ranking
        for every query) or through `embedder(task, progress, batch_size)` (vectors searched
        in an index); `saved_index` searches the index stage's index instead of embedding the
        catalogue here.
        """
        for code in self.exclusions:
            if code not in run.results:
                continue
            task, rows = BY_CODE[code], test[code]
            stats = ranking_stats(self.ranked(system, task, rows, saved_index), rows, self.ks)
            run.results[code] = with_row_stats(task, run.results[code], rows, stats)
        return run
