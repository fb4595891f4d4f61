"""Recommendations from the catalogue indexes: a user, a query or an item -> the top k items.

Each request is a `Query`: an embedding task, the text its model input is, the instruction it
is embedded with and the items left out. Queries are asked exactly as the task's rows ask
them, so a recommendation and an evaluated row mean the same thing:

- a user (U2I): the user's history from the build (`u2i_seen/histories.parquet`) rendered as
  the U2I rows render it (`recfound.data.tasks.sequences.history_input`: the last
  `build.max_history` titles, numbered), with the instruction of the user's source
  (`instruction_for`; a user's interactions all come from one source, so the source of the
  latest item is the user's). Everything in the history is left out unless asked otherwise;
- a free-text history (U2I): titles given by hand, rendered the same way, with the training
  instruction of the task (`INSTRUCTIONS`); nothing is left out;
- a query (Q2I): the text as given, with Q2I's instruction;
- an item (I2I): its catalogue passage, as I2I rows' input is, with the instruction of its
  source; the item itself is left out.

The query is embedded by the merged model routed to the task (`LLMSystem.embedder`, as
evaluation embeds row queries) and searched in that task's index (recfound.index.stage:
fingerprints checked before the model is loaded, so a stale index fails at once).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recfound.config import Config
from recfound.data.catalogue import HISTORIES_FILE, SEEN_DIR, read_catalogue
from recfound.data.instructions import INSTRUCTIONS, instruction_for
from recfound.data.tasks.sequences import history_input
from recfound.errors import DataError, RecFoundError
from recfound.evaluate.systems import LLMSystem
from recfound.index.stage import (
    embedding_system,
    fingerprints,
    load_task_index,
    merged_adapter_dir,
)
from recfound.index.store import CatalogueIndex
from recfound.tasks import task_by_code


class Catalogue:
    """The build's catalogue (recfound.data.catalogue) by item id: title, passage, source."""

    def __init__(self, table: pa.Table) -> None:
        self.table = table
        self.ids: list[str] = table["item_id"].to_pylist()
        self._row = {item_id: row for row, item_id in enumerate(self.ids)}
        self._titles = table["title"].to_pylist()
        self._passages = table["passage"].to_pylist()
        self._sources = table["source"].to_pylist()

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def row(self, item_id: str) -> int:
        """The item's row; RecFoundError naming an unknown id."""
        if item_id not in self._row:
            raise RecFoundError(f"unknown item {item_id!r}: not in the catalogue")
        return self._row[item_id]

    def title(self, item_id: str) -> str:
        return self._titles[self.row(item_id)]

    def passage(self, item_id: str) -> str:
        return self._passages[self.row(item_id)]

    def source(self, item_id: str) -> str:
        return self._sources[self.row(item_id)]


@dataclass(frozen=True)
class Query:
    """One recommendation request, as the model is asked it."""

    task: str  # embedding task code: U2I, Q2I or I2I
    text: str  # the model input, as the task's rows have it
    instruction: str  # embedded with the text, excluded from the pooled vector
    subject: str  # who or what it is for, e.g. "user A1B2" (the table's heading)
    exclude: frozenset[str] = field(default_factory=frozenset)


def user_history(unified_dir: str | Path, user_id: str) -> list[str]:
    """The user's time-ordered item ids, as the build recorded them for U2I."""
    path = Path(unified_dir) / SEEN_DIR / HISTORIES_FILE
    if not path.is_file():
        raise DataError(path, "no user histories: the build has no U2I rows (use --history)")
    found = pq.read_table(path, filters=[("user_id", "==", user_id)])
    if not found.num_rows:
        raise RecFoundError(f"unknown user {user_id!r}: no U2I history in {path}")
    return found["item_ids"][0].as_py()


def user_query(
    catalogue: Catalogue, user_id: str, history: Sequence[str], max_history: int, seen: bool
) -> Query:
    """U2I for a user of the build with this `history` (`user_history`); `seen` keeps the
    items already in it among the results."""
    return Query(
        task="U2I",
        text=history_input(history, len(history), max_history, catalogue.title),
        instruction=instruction_for("U2I", catalogue.source(history[-1])),
        subject=f"user {user_id}",
        exclude=frozenset() if seen else frozenset(history),
    )


def history_query(titles: Sequence[str], max_history: int) -> Query:
    """U2I for a history typed by hand: item titles, oldest first."""
    if not titles or any(not title.strip() for title in titles):
        raise RecFoundError("the history is empty: give each item's title")
    return Query(
        task="U2I",
        text=history_input(titles, len(titles), max_history, str.strip),
        instruction=INSTRUCTIONS["U2I"],
        subject=f"a history of {len(titles)} item(s)",
    )


def text_query(text: str) -> Query:
    """Q2I for a search query."""
    if not text.strip():
        raise RecFoundError("the query is empty")
    return Query(
        task="Q2I", text=text.strip(), instruction=INSTRUCTIONS["Q2I"], subject=f"query {text!r}"
    )


def item_query(catalogue: Catalogue, item_id: str) -> Query:
    """I2I for a catalogue item; the item itself is never recommended."""
    return Query(
        task="I2I",
        text=catalogue.passage(item_id),
        instruction=instruction_for("I2I", catalogue.source(item_id)),
        subject=f"item {item_id}",
        exclude=frozenset({item_id}),
    )


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float  # cosine similarity of the query and the item, higher is closer


@dataclass(frozen=True)
class Recommendations:
    query: Query
    items: list[Recommendation]

    def as_json(self) -> dict[str, Any]:
        return {
            "task": self.query.task,
            "for": self.query.subject,
            "input": self.query.text,
            "instruction": self.query.instruction,
            "left_out": len(self.query.exclude),
            "items": [
                {"rank": rank, "item_id": r.item_id, "title": r.title, "score": r.score}
                for rank, r in enumerate(self.items, start=1)
            ],
        }

    def table(self) -> list[str]:
        """A heading and one line per item: rank, id, score, title."""
        left_out = f" ({len(self.query.exclude)} left out)" if self.query.exclude else ""
        width = max([len("item"), *(len(r.item_id) for r in self.items)])
        lines = [
            f"{self.query.task} for {self.query.subject}{left_out}",
            f"{'rank':>4}  {'item':<{width}}  {'score':>7}  title",
        ]
        for rank, r in enumerate(self.items, start=1):
            lines.append(f"{rank:>4}  {r.item_id:<{width}}  {r.score:>7.4f}  {r.title}")
        return lines


class Recommender:
    """The catalogue, its task indexes and the merged model, each loaded once when first
    needed: one CLI request, or many from a long-lived process."""

    def __init__(self, cfg: Config, device: str | None = None) -> None:
        self.cfg = cfg
        self.device = device
        self.catalogue = Catalogue(read_catalogue(cfg.paths.unified))
        self._indexes: dict[str, CatalogueIndex] = {}
        self._expect: dict[str, str] | None = None
        self._system: LLMSystem | None = None

    def index(self, code: str) -> CatalogueIndex:
        """Task `code`'s index, checked against the model and catalogue on disk now."""
        if code not in self._indexes:
            if self._expect is None:
                cfg = self.cfg
                adapter_dir = merged_adapter_dir(cfg)
                self._expect = fingerprints(cfg.paths.base_model, adapter_dir, self.catalogue.table)
            self._indexes[code] = load_task_index(
                self.cfg.paths.index, code, self.cfg.index, self._expect
            )
        return self._indexes[code]

    def system(self) -> LLMSystem:
        if self._system is None:
            from recfound.model.inference import load_recfound

            cfg = self.cfg
            model, tokenizer = load_recfound(
                cfg.paths.base_model, merged_adapter_dir(cfg), cfg, self.device
            )
            self._system = embedding_system(model, tokenizer, cfg)
        return self._system

    def for_user(self, user_id: str, seen: bool = False) -> Query:
        history = user_history(self.cfg.paths.unified, user_id)
        return user_query(self.catalogue, user_id, history, self.cfg.build.max_history, seen)

    def for_history(self, titles: Sequence[str]) -> Query:
        return history_query(titles, self.cfg.build.max_history)

    def for_item(self, item_id: str) -> Query:
        return item_query(self.catalogue, item_id)

    def recommend(self, query: Query, k: int) -> Recommendations:
        """The `k` items of the catalogue nearest `query` (its exclusions left out), best first."""
        if not 1 <= k <= len(self.catalogue):
            raise RecFoundError(
                f"k must be between 1 and the catalogue's {len(self.catalogue)} items, got {k}"
            )
        index = self.index(query.task)  # before the model: a stale index fails at once
        embed = self.system().embedder(task_by_code(query.task), progress=False)
        found = index.search(embed([query.text], query.instruction), k, [query.exclude])
        items = [
            Recommendation(item_id, self.catalogue.title(item_id), float(score))
            for item_id, score in zip(found.ids[0], found.scores[0], strict=True)
        ]
        return Recommendations(query, items)
