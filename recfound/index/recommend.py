"""Recommendations from the catalogue indexes: a user, a query or an item -> the top k items.

Each request is a `Query`: an embedding task, the text its model input is, the instruction it
is embedded with and the items left out. Queries are asked exactly as the task's rows ask
them, so a recommendation and an evaluated row mean the same thing:

- a user (U2I): the user's history from the build (`sequences.parquet`) rendered as
  the U2I rows render it (`recfound.data.tasks.sequences.history_input`: the last
  `build.max_history` titles, numbered), with the instruction of the user's source
  (`instruction_for`; a user's interactions all come from one source, so the source of the
  latest item is the user's). Everything in the history is left out unless asked otherwise;
- a free-text history (U2I): titles given by hand, rendered the same way, with the training
  instruction of the task (`INSTRUCTIONS`); nothing is left out;
- a query (Q2I): the text as given (or each line / JSONL `input` of a file, read as
  `recfound embed --file` reads it), with Q2I's instruction, cut to `serve.max_input_chars`
  characters, the limit the server refuses past: a longer text is embedded cut, with a note
  saying so, instead of costing seconds per 10,000 characters;
- an item (I2I): its catalogue passage, as I2I rows' input is, with the instruction of its
  source; the item itself is left out.

The query is embedded by the merged model routed to the task, through its `Predictor` (as
evaluation embeds row queries: cut to `train.max_len_query` tokens, normalised in float32), and
searched in that task's index (recfound.index.stage: fingerprints checked before the model is
loaded, so a stale index fails at once).
Queries of one task and instruction are embedded in one batch.

Valid ids are listed by `list_ids` (`recfound recommend --list users|items`): the users with a
U2I history in the build and the catalogue's items, with their count.

What is echoed of an input is a preview (`preview`): a heading quotes at most
`SUBJECT_PREVIEW_CHARS` of a query, the JSON answer at most `INPUT_PREVIEW_CHARS` of any model
input, with its full length beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recfound.config import Config
from recfound.data.catalogue import CATALOGUE_FILE, read_catalogue
from recfound.data.instructions import INSTRUCTIONS, instruction_for
from recfound.data.tasks.sequences import history_input
from recfound.errors import DataError, RecFoundError
from recfound.index.stage import fingerprints, load_task_index
from recfound.index.store import CatalogueIndex
from recfound.merge.layout import merged_adapter_dir
from recfound.outputs import SEQUENCES_FILE
from recfound.tasks import task_by_code

if TYPE_CHECKING:  # torch and transformers load with the model, not for `--list`
    from recfound.model.predictor import Predictor

# Characters of a query quoted in a table's heading: enough to recognise it, one line.
SUBJECT_PREVIEW_CHARS = 60
# Characters of the model input shown in the JSON answer (a rendered U2I history of
# build.max_history titles fits; a pasted document does not need to come back whole).
INPUT_PREVIEW_CHARS = 500
LIST_KINDS = ("users", "items")


def preview(text: str, limit: int) -> str:
    """`text` if it has at most `limit` characters, else its first ones and "…" (`limit` in all)."""
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


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
    given_chars: int | None = None  # a query cut to its limit: the characters it came with

    @property
    def cut(self) -> bool:
        return self.given_chars is not None


def user_history(unified_dir: str | Path, user_id: str) -> list[str]:
    """The user's time-ordered item ids, as the build recorded them (sequences.parquet)."""
    path = sequences_path(unified_dir)
    found = pq.read_table(path, filters=[("user_id", "==", user_id)])
    if not found.num_rows:
        raise RecFoundError(f"unknown user {user_id!r}: no history in {path}")
    return found["item_ids"][0].as_py()


def sequences_path(unified_dir: str | Path) -> Path:
    """The build's user sequences; DataError when it wrote none (no U2I/SR/UP rows)."""
    path = Path(unified_dir) / SEQUENCES_FILE
    if not path.is_file():
        raise DataError(path, "no user histories: the build has no U2I rows (use --history)")
    return path


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


def text_query(text: str, max_chars: int | None = None, instruction: str | None = None) -> Query:
    """Q2I for a search query, with Q2I's instruction unless one is given; a text over
    `max_chars` characters (`serve.max_input_chars`) is cut to them (`Query.cut`). None: no
    cut (the server refuses such a row before it gets here)."""
    text = text.strip()
    if not text:
        raise RecFoundError("the query is empty")
    kept = text[:max_chars].rstrip()
    return Query(
        task="Q2I",
        text=kept,
        instruction=INSTRUCTIONS["Q2I"] if instruction is None else instruction,
        subject=f"query {preview(kept, SUBJECT_PREVIEW_CHARS)!r}",
        given_chars=len(text) if len(kept) < len(text) else None,
    )


def cut_note(query: Query, max_chars: int, where: str = "the query") -> str:
    """What a person is told about a query cut to `max_chars` (`text_query`)."""
    return (
        f"{where} has {query.given_chars:,} characters; only the first {max_chars:,} "
        "(serve.max_input_chars) were kept"
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
class IdList:
    """Valid ids of one kind (`LIST_KINDS`), as many as asked, and how many there are."""

    kind: str  # "users" or "items"
    count: int  # all of them
    rows: list[tuple[str, str]]  # (id, what it is: an item's title, a user's history size)
    source: Path  # the build file they come from

    def as_json(self) -> dict[str, Any]:
        key = "title" if self.kind == "items" else "history"
        return {
            "kind": self.kind,
            "count": self.count,
            "listed": len(self.rows),
            "source": str(self.source),
            self.kind: [{"id": id_, key: about} for id_, about in self.rows],
        }

    def table(self) -> list[str]:
        """A heading with the count, then one id per line with what it is."""
        shown = "all" if len(self.rows) == self.count else f"the first {len(self.rows)}"
        width = max([len("id"), *(len(id_) for id_, _ in self.rows)])
        lines = [f"{self.count} {self.kind} in {self.source}; {shown} (--limit N, 0: all):"]
        lines += [f"{id_:<{width}}  {about}" for id_, about in self.rows]
        return lines


def list_ids(unified_dir: str | Path, catalogue: Catalogue, kind: str, limit: int) -> IdList:
    """The first `limit` (0: every one) valid ids of `kind`, sorted: "users", those with a U2I
    history in the build (what --user takes); "items", the catalogue's (what --item takes)."""
    if kind not in LIST_KINDS:
        raise RecFoundError(f"unknown id kind {kind!r}; expected one of {', '.join(LIST_KINDS)}")
    if limit < 0:
        raise RecFoundError(f"--limit must be 0 (all) or more, got {limit}")
    if kind == "items":
        ids = sorted(catalogue.ids)
        rows = [(item, catalogue.title(item)) for item in ids[: limit or None]]
        return IdList(kind, len(ids), rows, Path(unified_dir) / CATALOGUE_FILE)
    path = sequences_path(unified_dir)
    table = pq.read_table(path, columns=["user_id", "item_ids"])
    sizes = dict(
        zip(
            table["user_id"].to_pylist(),
            pc.list_value_length(table["item_ids"]).to_pylist(),
            strict=True,
        )
    )
    users = sorted(sizes)
    rows = [(user, f"{sizes[user]} items in history") for user in users[: limit or None]]
    return IdList(kind, len(users), rows, path)


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
            "input": preview(self.query.text, INPUT_PREVIEW_CHARS),
            "input_chars": len(self.query.text),
            "cut_from_chars": self.query.given_chars,
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
    needed: one CLI request, or many from a long-lived process. `notify` gets the predictor's
    one-line notes (a query cut to `train.max_len_query` tokens)."""

    def __init__(
        self,
        cfg: Config,
        device: str | None = None,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.device = device
        self.notify = notify
        self.catalogue = Catalogue(read_catalogue(cfg.paths.unified))
        self._indexes: dict[str, CatalogueIndex] = {}
        self._expect: dict[str, str] | None = None
        self._predictor: Predictor | None = None

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

    def predictor(self) -> Predictor:
        """The merged model, loaded on first use."""
        if self._predictor is None:
            from recfound.model.predictor import Predictor

            cfg = self.cfg
            self._predictor = Predictor.load(
                cfg, cfg.paths.base_model, merged_adapter_dir(cfg), self.device, notify=self.notify
            )
        return self._predictor

    def for_user(self, user_id: str, seen: bool = False) -> Query:
        history = user_history(self.cfg.paths.unified, user_id)
        return user_query(self.catalogue, user_id, history, self.cfg.build.max_history, seen)

    def for_history(self, titles: Sequence[str]) -> Query:
        return history_query(titles, self.cfg.build.max_history)

    def for_item(self, item_id: str) -> Query:
        return item_query(self.catalogue, item_id)

    def for_query(self, text: str, instruction: str | None = None) -> Query:
        """Q2I for `text`, cut to `serve.max_input_chars` (`text_query`)."""
        return text_query(text, self.cfg.serve.max_input_chars, instruction)

    def list_ids(self, kind: str, limit: int) -> IdList:
        """Valid --user or --item ids of this build (`list_ids`); no model or index needed."""
        return list_ids(self.cfg.paths.unified, self.catalogue, kind, limit)

    def recommend(self, query: Query, k: int) -> Recommendations:
        """The `k` items of the catalogue nearest `query` (its exclusions left out), best first."""
        return self.recommend_all([query], k)[0]

    def recommend_all(self, queries: Sequence[Query], k: int) -> list[Recommendations]:
        """`recommend` for each query, in order; the queries of one task and instruction are
        embedded in one batch."""
        if not 1 <= k <= len(self.catalogue):
            raise RecFoundError(
                f"k must be between 1 and the catalogue's {len(self.catalogue)} items, got {k}"
            )
        groups: dict[tuple[str, str], list[int]] = {}
        for i, query in enumerate(queries):
            groups.setdefault((query.task, query.instruction), []).append(i)
        for task, _ in groups:
            self.index(task)  # before the model: a stale index fails at once
        answers: list[Recommendations | None] = [None] * len(queries)
        for (task, instruction), members in groups.items():
            from recfound.model.inference import TextInput

            requests = [TextInput(queries[i].text, instruction) for i in members]
            vectors = self.predictor().embed(task_by_code(task), requests)
            found = self.index(task).search(vectors, k, [queries[i].exclude for i in members])
            for row, i in enumerate(members):
                items = [
                    Recommendation(item_id, self.catalogue.title(item_id), float(score))
                    for item_id, score in zip(found.ids[row], found.scores[row], strict=True)
                ]
                answers[i] = Recommendations(queries[i], items)
        return [answer for answer in answers if answer is not None]
