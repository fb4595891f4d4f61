"""The catalogue and U2I seen items the build writes beside the unified dataset."""

from __future__ import annotations

from pathlib import Path

import datasets
import pyarrow as pa
import pytest
from test_build import BUILD, SAMPLE, raw_sequences

from recfound.data.build import write_unified
from recfound.data.catalogue import (
    CATALOGUE_SCHEMA,
    catalogue_fingerprint,
    excluded_ids,
    i2i_query_item,
    read_catalogue,
    read_seen,
    read_sequences,
)
from recfound.data.sample import write_sample
from recfound.data.schema import SPLITS
from recfound.data.unified import read_manifest
from recfound.outputs import SEQUENCES_FILE

EMBEDDING_CODES = ("U2I", "Q2I", "I2I")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(raw data dir, unified output dir) of the sample build."""
    root = tmp_path_factory.mktemp("catalogue")
    raw = write_sample(root / "data", SAMPLE)
    write_unified(raw, BUILD, root / "unified")
    return raw, root / "unified"


def embedding_rows(unified_dir: Path, code: str | None = None) -> list[dict]:
    dataset = datasets.load_from_disk(str(unified_dir))
    return [
        {**row, "split": split}
        for split in SPLITS
        for row in dataset[split]
        if row["task"] in EMBEDDING_CODES and (code is None or row["task"] == code)
    ]


def test_catalogue_holds_every_retrievable_item_with_the_rows_passage_text(built) -> None:
    _, unified_dir = built
    table = read_catalogue(unified_dir)
    assert table.schema.equals(CATALOGUE_SCHEMA)
    ids = table["item_id"].to_pylist()
    assert ids == sorted(set(ids)), "one row per item, in item-id order"
    passage = dict(zip(ids, table["passage"].to_pylist(), strict=True))
    rows = embedding_rows(unified_dir)
    assert {row["task"] for row in rows} == set(EMBEDDING_CODES)
    checked = 0
    for row in rows:
        for id_key, text_key in (("positive_ids", "positives"), ("negative_ids", "negatives")):
            for item_id, text in zip(row[id_key], row[text_key], strict=True):
                assert passage[item_id] == text, (row["id"], item_id)
                checked += 1
    assert checked > 100
    titles = dict(zip(ids, table["title"].to_pylist(), strict=True))
    assert all(titles[i] and passage[i].startswith(titles[i]) for i in ids)


def test_i2i_query_item_is_in_the_catalogue_and_excluded(built) -> None:
    _, unified_dir = built
    table = read_catalogue(unified_dir)
    passage = dict(zip(table["item_id"].to_pylist(), table["passage"].to_pylist(), strict=True))
    rows = embedding_rows(unified_dir, "I2I")
    for row, excluded in zip(rows, excluded_ids("I2I", rows), strict=True):
        anchor = i2i_query_item(row)
        assert excluded == {anchor}
        assert passage[anchor] == row["input"]
        assert anchor not in row["positive_ids"]


def test_u2i_seen_items_are_the_users_interactions_before_the_target(built) -> None:
    raw, unified_dir = built
    rows = embedding_rows(unified_dir, "U2I")
    seen = read_seen(unified_dir)
    assert set(seen.positions) == {row["id"] for row in rows}
    sequences = raw_sequences(raw)
    for row in rows:
        target = row["positive_ids"][0]
        events = sequences[row["user_id"]]
        # The row's target event: the one whose item the row predicts, at the recorded position.
        _, position = seen.positions[row["id"]]
        assert events[position][1] == target
        expected = {item for _, item in events[:position]} - {target}
        assert seen.of(row["id"]) == expected
        assert not expected & set(row["negative_ids"])
    assert {row["split"] for row in rows} == set(SPLITS)
    assert all(seen.of(row["id"]) for row in rows), "every U2I row has a history"


def test_reading_seen_items_for_some_rows_reads_only_those(built) -> None:
    _, unified_dir = built
    rows = embedding_rows(unified_dir, "U2I")[:3]
    seen = read_seen(unified_dir, [row["id"] for row in rows])
    assert set(seen.positions) == {row["id"] for row in rows}
    assert set(seen.histories) == {row["user_id"] for row in rows}
    assert excluded_ids("U2I", rows, seen) == [read_seen(unified_dir).of(r["id"]) for r in rows]


def test_q2i_excludes_nothing() -> None:
    assert excluded_ids("Q2I", [{"id": "a"}, {"id": "b"}]) == [frozenset(), frozenset()]


def test_the_catalogue_fingerprint_follows_its_passages(built) -> None:
    _, unified_dir = built
    table = read_catalogue(unified_dir)
    same = catalogue_fingerprint(read_catalogue(unified_dir))
    assert catalogue_fingerprint(table) == same
    passages = table["passage"].to_pylist()
    changed = table.set_column(1, "passage", pa.array([passages[0] + "!", *passages[1:]]))
    assert catalogue_fingerprint(changed) != same


def test_sequences_table_holds_every_kept_user_whole_and_uncapped(built) -> None:
    raw, unified_dir = built
    table = read_sequences(unified_dir).to_pylist()
    expected = {
        user: [item for _, item in events]
        for user, events in raw_sequences(raw).items()
        if len(events) >= BUILD.min_interactions
    }
    assert {row["user_id"]: row["item_ids"] for row in table} == expected
    assert all(row["timestamps"] == sorted(row["timestamps"]) for row in table)
    u2i_test = [row for row in embedding_rows(unified_dir, "U2I") if row["split"] == "test"]
    assert len(table) > len(u2i_test), "the table is not capped as the test split is"
    record = read_manifest(unified_dir)["sequences"]
    assert record["file"] == SEQUENCES_FILE
    assert record["users"] == len(table)
    assert record["interactions"] == sum(len(items) for items in expected.values())
