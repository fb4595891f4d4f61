"""The retrievable catalogue and each U2I row's seen items: what full-catalogue retrieval needs.

The build writes these beside the unified splits (recfound.data.build):

- `catalogue.parquet`, one row per item of the build's Catalog (every item listed by the
  metadata files read: Amazon `meta_*`, MovieLens movies): `item_id`, `passage` (exactly
  `Catalog.passage`, the text U2I/Q2I/I2I rows use for positives and negatives), `title`,
  `category`, `source`. Items without metadata never reach a row (ingest drops their
  interactions), so this is every item an embedding task can retrieve, in item-id order.
- `sequences.parquet` (recfound.outputs.SEQUENCES_FILE): every user's whole sequence,
  uncapped (`source`, `user_id`, `item_ids`, `timestamps`, oldest first), for the users the
  sequence tasks keep (at least `build.min_interactions` interactions): the U2I rows' users,
  `recfound recommend --user`, and the field's leave-one-out protocol
  (recfound.evaluate.leave_one_out), which needs every user. Written from the same sorted
  `Sequences` the task builders read, so its order is theirs: by time, and interactions of
  the same second by item id (string order: movie "ml:10" before "ml:9"), the last of
  them being the user's held-out test target. build.json records its size and digest.
- `u2i_seen/rows.parquet`, where each U2I row's target sits in its user's sequence: `id` of
  the U2I row, `user_id`, `position` (the target's index in `item_ids`). A row's seen items
  are `item_ids[:position]` minus the target itself, so a repeat purchase stays findable
  rather than excluded (linear in the interaction log: a `seen_ids` list per row would grow
  with the square of a user's history under uncapped training rows, and would change the
  unified schema).

I2I needs no table: its query item is in the row, `target_key = "I2I:<item id>"`; Q2I
excludes nothing. `excluded_ids` gives each row's exclusion set for any embedding task.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recfound.data.tasks.catalog import Catalog
from recfound.data.tasks.interactions import Sequences, UserSequence
from recfound.errors import DataError
from recfound.outputs import SEQUENCES_FILE

CATALOGUE_FILE = "catalogue.parquet"
SEEN_DIR = "u2i_seen"
SEEN_ROWS_FILE = "rows.parquet"
# Rows buffered before a parquet row group is written: bounded memory, few row groups.
WRITE_BATCH = 65_536

CATALOGUE_SCHEMA = pa.schema(
    [
        ("item_id", pa.string()),
        ("passage", pa.string()),  # Catalog.passage: what the embedding tasks embed
        ("title", pa.string()),
        ("category", pa.string()),
        ("source", pa.string()),
    ]
)
SEEN_ROWS_SCHEMA = pa.schema(
    [("id", pa.string()), ("user_id", pa.string()), ("position", pa.int32())]
)
SEQUENCES_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("user_id", pa.string()),
        ("item_ids", pa.list_(pa.string())),  # oldest first
        ("timestamps", pa.list_(pa.int64())),  # seconds, aligned with item_ids
    ]
)


class _BatchedParquet:
    """A parquet file written in row groups of at most WRITE_BATCH rows."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.schema = schema
        self._writer = pq.ParquetWriter(path, schema)
        self._rows: list[dict[str, Any]] = []

    def append(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= WRITE_BATCH:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self._writer.write_table(pa.Table.from_pylist(self._rows, schema=self.schema))
            self._rows = []

    def close(self) -> None:
        self.flush()
        self._writer.close()


def write_catalogue(catalog: Catalog, path: Path) -> int:
    """Write `catalog` as CATALOGUE_FILE rows at `path`, item-id order; returns the item count."""
    out = _BatchedParquet(path, CATALOGUE_SCHEMA)
    try:
        for item_id in sorted(catalog.items):
            info = catalog[item_id]
            out.append(
                {
                    "item_id": item_id,
                    "passage": catalog.passage(item_id),
                    "title": info.title,
                    "category": info.category,
                    "source": info.source,
                }
            )
    finally:
        out.close()
    return len(catalog.items)


def write_sequences(seqs: Sequences, min_interactions: int, path: Path) -> dict[str, Any]:
    """Write every user of `seqs` with at least `min_interactions` interactions to `path`
    (SEQUENCES_SCHEMA, users in id order); returns what build.json records of it: file,
    users, interactions and a content digest (blake2b over every user's source, id, items
    and times), so a changed sequence changes the build's record."""
    out = _BatchedParquet(path, SEQUENCES_SCHEMA)
    digest = hashlib.blake2b(digest_size=16)
    users = interactions = 0
    try:
        for user, n in seqs.lengths().items():
            if n < min_interactions:
                continue
            seq = seqs.get(user)
            out.append(
                {
                    "source": seq.source,
                    "user_id": user,
                    "item_ids": list(seq.items),
                    "timestamps": list(seq.timestamps),
                }
            )
            digest.update(f"{seq.source}\x1f{user}\x1f{seq.items}\x1f{seq.timestamps}\x1e".encode())
            users += 1
            interactions += n
    finally:
        out.close()
    return {
        "file": SEQUENCES_FILE,
        "users": users,
        "interactions": interactions,
        "digest": digest.hexdigest(),
    }


def read_sequences(unified_dir: str | Path, users: pa.Array | None = None) -> pa.Table:
    """The sequences table the build wrote beside the unified dataset at `unified_dir`
    (only the rows of `users` when given)."""
    path = Path(unified_dir) / SEQUENCES_FILE
    table = _read_table(path, SEQUENCES_SCHEMA, "no user sequences (the build had no U2I/SR/UP)")
    if users is not None:
        table = table.filter(pc.is_in(table["user_id"], users))
    return table


def _read_table(path: Path, schema: pa.Schema, missing: str) -> pa.Table:
    """The parquet table at `path`; DataError when it is missing or has other columns."""
    if not path.is_file():
        raise DataError(path, f"{missing}; rebuild with `recfound stage build`")
    table = pq.read_table(path)
    if not table.schema.equals(schema):
        raise DataError(path, f"unexpected columns {table.schema.names}")
    return table


class CatalogueOutputs:
    """The build's catalogue and U2I seen tables, written into a spill directory as the build
    runs, then moved into the unified output (`save`).

    `observe_row` is a SequenceTasks row observer: it records the (user, position) of each
    U2I row yielded (the user's history is their row of sequences.parquet).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / SEEN_DIR).mkdir(parents=True, exist_ok=True)
        self._rows = _BatchedParquet(directory / SEEN_DIR / SEEN_ROWS_FILE, SEEN_ROWS_SCHEMA)
        self.items = 0
        self.sequences: dict[str, Any] | None = None  # build.json's record, once written

    def write_sequences(self, seqs: Sequences, min_interactions: int) -> None:
        """Every kept user's whole sequence (`write_sequences`), moved out by `save`."""
        self.sequences = write_sequences(seqs, min_interactions, self.directory / SEQUENCES_FILE)

    def write_items(self, catalog: Catalog) -> None:
        self.items = write_catalogue(catalog, self.directory / CATALOGUE_FILE)

    def observe_row(self, code: str, row: Mapping[str, Any], seq: UserSequence, k: int) -> None:
        if code != "U2I":
            return
        self._rows.append({"id": row["id"], "user_id": seq.user_id, "position": k})

    def save(self, out_dir: Path, with_seen: bool) -> None:
        """Move the files into `out_dir`; the seen tables only `with_seen` (U2I was kept)."""
        self._rows.close()
        shutil.move(self.directory / CATALOGUE_FILE, out_dir / CATALOGUE_FILE)
        if self.sequences is not None:
            shutil.move(self.directory / SEQUENCES_FILE, out_dir / SEQUENCES_FILE)
        if with_seen:
            shutil.move(self.directory / SEEN_DIR, out_dir / SEEN_DIR)


def read_catalogue(unified_dir: str | Path) -> pa.Table:
    """The catalogue the build wrote beside the unified dataset at `unified_dir`."""
    return _read_table(Path(unified_dir) / CATALOGUE_FILE, CATALOGUE_SCHEMA, "no catalogue")


def catalogue_fingerprint(table: pa.Table) -> str:
    """A content hash of what an index embeds: every (item id, passage), in table order."""
    digest = hashlib.blake2b(digest_size=16)
    for batch in table.select(["item_id", "passage"]).to_batches():
        ids, passages = batch["item_id"].to_pylist(), batch["passage"].to_pylist()
        for item_id, passage in zip(ids, passages, strict=True):
            digest.update(f"{item_id}\x1f{passage}\x1e".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class SeenItems:
    """Per U2I row id: the user's history and the target's position in it."""

    positions: Mapping[str, tuple[str, int]]  # row id -> (user id, position)
    histories: Mapping[str, Sequence[str]]  # user id -> item ids, oldest first

    def of(self, row_id: str) -> frozenset[str]:
        """The items the row's user had before its target, the target itself left out."""
        user, position = self.positions[row_id]
        history = self.histories[user]
        return frozenset(history[:position]) - {history[position]}


def read_seen(unified_dir: str | Path, row_ids: Iterable[str] | None = None) -> SeenItems:
    """The seen items of the U2I rows `row_ids` (default all) of the build at `unified_dir`.

    Only the sequences of those rows' users are read.
    """
    folder = Path(unified_dir) / SEEN_DIR
    if not (folder / SEEN_ROWS_FILE).is_file():
        raise DataError(folder, "no U2I seen items; rebuild with `recfound stage build`")
    rows = pq.read_table(folder / SEEN_ROWS_FILE)
    if row_ids is not None:
        rows = rows.filter(pc.is_in(rows["id"], pa.array(list(row_ids), pa.string())))
    histories = read_sequences(unified_dir, rows["user_id"].unique())
    return SeenItems(
        positions={
            i: (u, p)
            for i, u, p in zip(
                rows["id"].to_pylist(),
                rows["user_id"].to_pylist(),
                rows["position"].to_pylist(),
                strict=True,
            )
        },
        histories=dict(
            zip(histories["user_id"].to_pylist(), histories["item_ids"].to_pylist(), strict=True)
        ),
    )


def i2i_query_item(row: Mapping[str, Any]) -> str:
    """The item an I2I row asks about (its target_key is `I2I:<item id>`)."""
    prefix = "I2I:"
    if not row["target_key"].startswith(prefix):
        raise ValueError(f"not an I2I row: target_key {row['target_key']!r}")
    return row["target_key"][len(prefix) :]


def excluded_ids(
    code: str, rows: Sequence[Mapping[str, Any]], seen: SeenItems | None = None
) -> list[frozenset[str]]:
    """Per row of embedding task `code`: the item ids full-catalogue retrieval must skip.

    U2I: what the user had before the target (`seen`, from `read_seen`); I2I: the query item
    itself; Q2I: nothing.
    """
    if code == "U2I":
        if seen is None:
            raise ValueError("U2I exclusions need the seen items (read_seen)")
        return [seen.of(row["id"]) for row in rows]
    if code == "I2I":
        return [frozenset({i2i_query_item(row)}) for row in rows]
    return [frozenset() for _ in rows]
