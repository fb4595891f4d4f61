"""The pandas frames the validation suites run on: raw files as the readers yield them, and the
unified splits with the few derived columns the unified suites need (recfound.data.gx_suites).

Raw files are streamed through the readers; a file with more records than `sample_rows` is
validated on a seeded uniform reservoir sample of that many records (Algorithm R), so a
multi-gigabyte source costs memory for the sample only. Every record is still read, so a
record the reader cannot parse fails with its DataError whatever the sample.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import pandas as pd

from recfound.data import readers
from recfound.data import records as rec
from recfound.data.gx_suites import (
    COUNTED_COLUMNS,
    LONGEST_PASSAGE,
    OUTPUT_IN_OPTIONS,
    SHORTEST_PASSAGE,
    SPLIT,
    TARGET_IN_TRAIN,
    TASK_IN_EVERY_SPLIT,
    count_of,
)
from recfound.data.schema import SPLITS
from recfound.data.unified import load_unified


@dataclass(frozen=True)
class Batch:
    """One frame to validate: which suite, a readable name (the file or split), the rows."""

    suite: str
    name: str
    frame: pd.DataFrame
    rows_read: int  # records in the file; len(frame) when the whole file is validated


def reservoir_sample(items: Iterable, size: int, rng: random.Random) -> tuple[list, int]:
    """A uniform random sample of at most `size` items from a stream, and the stream's length.

    Algorithm R: keep the first `size` items; item i (0-based, i >= size) then replaces a
    random kept item with probability size / (i + 1). Streams no longer than `size` come back
    whole, in order.
    """
    kept: list = []
    seen = 0
    for item in items:
        if seen < size:
            kept.append(item)
        else:
            slot = rng.randrange(seen + 1)
            if slot < size:
                kept[slot] = item
        seen += 1
    return kept, seen


def records_frame(rows: list, record_type: type) -> pd.DataFrame:
    """Records (dataclass instances) as a frame with one column per field, in field order."""
    columns = [f.name for f in dataclasses.fields(record_type)]
    return pd.DataFrame([[getattr(row, name) for name in columns] for row in rows], columns=columns)


def _items(value: Iterable | None) -> list:
    """A list cell's items; a null cell counts as empty here (its own expectation flags it)."""
    return [] if value is None else list(value)


def with_counts(frame: pd.DataFrame, suite: str) -> pd.DataFrame:
    """Add `<column>_count` (number of items) for each list column `suite` counts."""
    for name in COUNTED_COLUMNS.get(suite, ()):
        if name in frame.columns:
            frame[count_of(name)] = [len(_items(value)) for value in frame[name]]
    return frame


def _raw_batch(
    suite: str,
    name: str,
    records: Callable[[], Iterator],
    record_type: type,
    sample_rows: int,
    seed: int,
) -> Batch:
    # One generator per file seeded from (seed, file name): the sample of a file does not
    # depend on which other files are present.
    rng = random.Random(f"{seed}:{name}")
    rows, rows_read = reservoir_sample(records(), sample_rows, rng)
    return Batch(suite, name, with_counts(records_frame(rows, record_type), suite), rows_read)


def raw_batches(data_dir: str | Path, sample_rows: int, seed: int) -> Iterator[Batch]:
    """One Batch per raw file present under `data_dir`, built lazily (one frame at a time).

    Suites: raw_reviews / raw_item_meta (Amazon Reviews 2023, 2018 and 2014), raw_esci,
    raw_amazonqa, raw_ratings / raw_movies / raw_movie_users / raw_movie_tags (MovieLens; the
    users file of ml-100k and ml-1m, the tags file of the CSV sets when present),
    raw_match_products / raw_match_pairs (Amazon-Google). A directory without any source
    yields nothing.
    """
    data_dir = Path(data_dir)
    sources = readers.discover_sources(data_dir)

    def batch(suite: str, path: Path, read: Callable[[Path], Iterator], record_type: type):
        name = path.relative_to(data_dir).as_posix()
        return _raw_batch(suite, name, lambda: read(path), record_type, sample_rows, seed)

    for category in sources.amazon_reviews:
        yield batch("raw_reviews", category.reviews, readers.read_reviews, rec.Review)
        yield batch("raw_item_meta", category.meta, readers.read_item_meta, rec.ItemMeta)
    for category in sources.amazon_reviews_2018:
        yield batch("raw_reviews", category.reviews, readers.read_reviews_2018, rec.Review)
        yield batch("raw_item_meta", category.meta, readers.read_item_meta_2018, rec.ItemMeta)
    for esci in sources.esci:
        name = esci.examples.relative_to(data_dir).as_posix()
        yield _raw_batch(
            "raw_esci",
            name,
            lambda esci=esci: readers.read_esci(esci.examples, esci.products),
            rec.EsciExample,
            sample_rows,
            seed,
        )
    for path in sources.amazonqa:
        yield batch("raw_amazonqa", path, readers.read_amazonqa, rec.QARecord)
    for movielens in sources.movielens:
        yield batch("raw_ratings", movielens.ratings, readers.read_ratings, rec.Rating)
        yield batch("raw_movies", movielens.movies, readers.read_movies, rec.Movie)
        if movielens.users is not None:
            users = movielens.users
            yield batch("raw_movie_users", users, readers.read_movie_users, rec.MovieUser)
        if movielens.tags is not None:
            yield batch("raw_movie_tags", movielens.tags, readers.read_movie_tags, rec.MovieTag)
    for tables in sources.amazon_google:
        for path in (tables.table_a, tables.table_b):
            yield batch("raw_match_products", path, readers.read_match_products, rec.MatchProduct)
        for path in (tables.train, tables.valid, tables.test):
            yield batch("raw_match_pairs", path, readers.read_match_pairs, rec.MatchPair)


def _split_names(dataset: datasets.DatasetDict) -> list[str]:
    """The dataset's splits, the schema's first; an unexpected split is validated too."""
    return [name for name in SPLITS if name in dataset] + sorted(set(dataset) - set(SPLITS))


def _passage_lengths(positives: Iterable | None, negatives: Iterable | None) -> list[int]:
    return [len(text) for text in (*_items(positives), *_items(negatives)) if text is not None]


def split_frame(split: datasets.Dataset) -> pd.DataFrame:
    """One split as a frame, plus the derived columns of the `unified_split` suite.

    shortest/longest_passage_chars: min/max length over a row's positives and negatives
    (missing when it has none); output_in_options: the reference answer is a listed option.
    """
    frame = with_counts(split.to_pandas(), "unified_split")
    if {"positives", "negatives"} <= set(frame.columns):
        lengths = [
            _passage_lengths(pos, neg)
            for pos, neg in zip(frame["positives"], frame["negatives"], strict=True)
        ]
        frame[SHORTEST_PASSAGE] = pd.Series([min(n) if n else None for n in lengths], dtype=float)
        frame[LONGEST_PASSAGE] = pd.Series([max(n) if n else None for n in lengths], dtype=float)
    if {"output", "options"} <= set(frame.columns):
        frame[OUTPUT_IN_OPTIONS] = [
            output in set(_items(options))
            for output, options in zip(frame["output"], frame["options"], strict=True)
        ]
    return frame


def across_splits_frame(dataset: datasets.DatasetDict) -> pd.DataFrame:
    """Every split's id, task_id and target_key stacked with its split name.

    target_in_train: the row's target_key also occurs in the train split (the suite expects it
    False on test rows: what the test split asks must not be taught by the train split).
    """
    keep = ["id", "task_id", "target_key"]
    frames = []
    for name in _split_names(dataset):
        part = dataset[name]
        part = part.select_columns([c for c in keep if c in part.column_names])
        frames.append(part.to_pandas().assign(**{SPLIT: name}))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*keep, SPLIT])
    if "target_key" in frame.columns:
        train_keys = set(frame.loc[frame[SPLIT] == "train", "target_key"])
        frame[TARGET_IN_TRAIN] = frame["target_key"].isin(train_keys)
    if "task_id" in frame.columns:  # task_in_every_split: the row's task has rows in each split
        frame[TASK_IN_EVERY_SPLIT] = frame.groupby("task_id")[SPLIT].transform(set(SPLITS).issubset)
    return frame


def unified_batches(path: str | Path) -> Iterator[Batch]:
    """`unified_split` on each split present, then `unified_across_splits` on all of them."""
    dataset = load_unified(path, splits=())  # a missing split is the suites' finding
    for name in _split_names(dataset):
        frame = split_frame(dataset[name])
        yield Batch("unified_split", f"unified/{name}", frame, len(frame))
    frame = across_splits_frame(dataset)
    yield Batch("unified_across_splits", "unified/all", frame, len(frame))
