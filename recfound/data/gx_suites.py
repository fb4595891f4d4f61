"""The Great Expectations suites, defined once in code and versioned as JSON in expectations/.

`build_suites()` is the definition; `python -m recfound.data.gx_suites` writes it to
expectations/<suite>.json, the files DVC tracks and the validate stage reads
(`load_suites`). tests/test_validate.py fails when the two drift apart.

Bounds that are knobs (text lengths) are GX suite parameters (`{"$PARAMETER": name}`), filled
at run time from params.yaml `validate`, so the JSON never goes stale when a knob changes.
Facts of the data (ratings 1-5, ESCI labels, task ids) are written into the suites.

Raw suites check one file of one source format, as the readers yield it (one row per
record, columns = the record's fields). Unified suites check one split (`unified_split`)
and the three splits together (`unified_across_splits`); the columns the unified checks need
beyond the schema (DERIVED_COLUMNS) are computed by recfound.data.gx_frames.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
from great_expectations.expectations.expectation import Expectation
from great_expectations.expectations.row_conditions import Column

from recfound.data import records
from recfound.data.schema import COLUMNS, SPLITS
from recfound.errors import DataError
from recfound.tasks import BY_CODE, NUM_TASKS, TASKS, Kind

# Suite parameters (names of fields of recfound.config.ValidateConfig).
MIN_TEXT = {"$PARAMETER": "min_text_chars"}
MAX_TEXT = {"$PARAMETER": "max_text_chars"}
RAW_MAX_TEXT = {"$PARAMETER": "raw_max_text_chars"}

# Tasks answered by choosing one of the options the row lists (recfound.md §5): SR one of 20
# lettered candidates, PRP and SA a lettered relation / rating, PM and AP yes or no.
CHOICE_TASK_IDS: tuple[int, ...] = tuple(
    BY_CODE[code].id for code in ("SR", "PRP", "SA", "PM", "AP")
)

# Columns recfound.data.gx_frames adds to a unified split so a per-row or cross-split rule can
# be stated as an ordinary GX expectation.
SHORTEST_PASSAGE = "shortest_passage_chars"  # min length over positives + negatives
LONGEST_PASSAGE = "longest_passage_chars"  # max length over positives + negatives
OUTPUT_IN_OPTIONS = "output_in_options"  # the reference answer is one of the listed options
TARGET_IN_TRAIN = "target_in_train"  # this row's target_key also occurs in the train split
TASK_IN_EVERY_SPLIT = "task_in_every_split"  # this row's task has rows in every split
SPLIT = "split"


def count_of(column: str) -> str:
    """The derived column holding the number of items of list column `column`."""
    return f"{column}_count"


# List-valued columns whose item counts a suite checks. GX measures a value's length on its
# text form (str(value)), which for a list is not its number of items, so the frames carry the
# counts as columns of their own.
COUNTED_COLUMNS: dict[str, tuple[str, ...]] = {
    "raw_amazonqa": ("review_snippets",),
    "unified_split": ("positives", "negatives", "options"),
}
DERIVED_COLUMNS: tuple[str, ...] = (
    *(count_of(name) for name in COUNTED_COLUMNS["unified_split"]),
    SHORTEST_PASSAGE,
    LONGEST_PASSAGE,
    OUTPUT_IN_OPTIONS,
)
ACROSS_SPLITS_COLUMNS: tuple[str, ...] = (
    "id",
    "task_id",
    "target_key",
    SPLIT,
    TARGET_IN_TRAIN,
    TASK_IN_EVERY_SPLIT,
)

# Identifiers and labels of a unified row that must be non-empty text.
UNIFIED_KEY_COLUMNS = ("id", "task", "kind", "target_key", "source")
# Free text of every unified row, bounded by min/max_text_chars.
UNIFIED_TEXT_COLUMNS = ("instruction", "input")

RATINGS_1_TO_5 = [1, 2, 3, 4, 5]
# MovieLens: whole stars in ml-100k / ml-1m, half stars 0.5-5 in the CSV sets.
HALF_STARS = [step / 2 for step in range(1, 11)]

EMBEDDING_ROWS = Column("kind") == Kind.EMBEDDING.value
GENERATIVE_ROWS = Column("kind") == Kind.GENERATIVE.value


def _columns(record_type: type) -> list[str]:
    return [f.name for f in dataclasses.fields(record_type)]


def _optional(annotation: Any) -> bool:
    """The field's type admits None (`X | None`): the public format may leave it out."""
    return type(None) in typing.get_args(annotation)


def _schema(suite: str, record_type: type) -> list[Expectation]:
    """Exactly the record's columns (+ counts); none null except the optional (`X | None`)."""
    hints = typing.get_type_hints(record_type)
    required = [name for name in _columns(record_type) if not _optional(hints[name])]
    counts = [count_of(name) for name in COUNTED_COLUMNS.get(suite, ())]
    return [
        gxe.ExpectTableColumnsToMatchSet(
            column_set=[*_columns(record_type), *counts], exact_match=True
        ),
        *(gxe.ExpectColumnValuesToNotBeNull(column=name) for name in required),
    ]


def _non_empty(*columns: str) -> list[Expectation]:
    return [gxe.ExpectColumnValueLengthsToBeBetween(column=name, min_value=1) for name in columns]


def _raw_text(*columns: str) -> list[Expectation]:
    return [
        gxe.ExpectColumnValueLengthsToBeBetween(column=name, max_value=RAW_MAX_TEXT)
        for name in columns
    ]


def _raw_suites() -> dict[str, list[Expectation]]:
    return {
        "raw_reviews": [
            *_schema("raw_reviews", records.Review),
            *_non_empty("asin", "parent_asin", "user_id"),
            *_raw_text("title", "text"),
            gxe.ExpectColumnValuesToBeInSet(column="rating", value_set=RATINGS_1_TO_5),
            gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="helpful_vote", min_value=0),
        ],
        "raw_item_meta": [
            *_schema("raw_item_meta", records.ItemMeta),
            *_non_empty("parent_asin", "title"),
            *_raw_text("title"),
            gxe.ExpectColumnValuesToBeUnique(column="parent_asin"),
            gxe.ExpectColumnValuesToBeBetween(column="average_rating", min_value=1, max_value=5),
            gxe.ExpectColumnValuesToBeBetween(column="rating_number", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0),
        ],
        "raw_esci": [
            *_schema("raw_esci", records.EsciExample),
            *_non_empty("query", "product_id", "product_title"),
            *_raw_text("query", "product_title", "product_description", "product_bullet_point"),
            gxe.ExpectColumnValuesToBeUnique(column="example_id"),
            gxe.ExpectColumnValuesToBeInSet(column="esci_label", value_set=["E", "S", "C", "I"]),
            gxe.ExpectColumnValuesToBeInSet(column="product_locale", value_set=["us", "es", "jp"]),
            gxe.ExpectColumnValuesToBeInSet(column="split", value_set=["train", "test"]),
        ],
        "raw_amazonqa": [
            *_schema("raw_amazonqa", records.QARecord),
            *_non_empty("qid", "question_text", "asin"),
            gxe.ExpectColumnValuesToBeBetween(column=count_of("review_snippets"), min_value=1),
            *_raw_text("question_text"),
            gxe.ExpectColumnValuesToBeUnique(column="qid"),
            gxe.ExpectColumnValuesToBeInSet(column="is_answerable", value_set=[True, False]),
        ],
        "raw_ratings": [
            *_schema("raw_ratings", records.Rating),
            *_non_empty("user_id", "item_id"),
            gxe.ExpectColumnValuesToBeInSet(column="rating", value_set=HALF_STARS),
            gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=1),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "item_id"]),
        ],
        "raw_movies": [
            *_schema("raw_movies", records.Movie),
            *_non_empty("item_id", "title"),
            *_raw_text("title"),
            gxe.ExpectColumnValuesToBeUnique(column="item_id"),
        ],
        "raw_movie_tags": [
            *_schema("raw_movie_tags", records.MovieTag),
            *_non_empty("user_id", "item_id"),
            *_raw_text("tag"),
            gxe.ExpectColumnValuesToBeBetween(column="timestamp", min_value=1),
        ],
        "raw_movie_users": [
            *_schema("raw_movie_users", records.MovieUser),
            *_non_empty("user_id", "occupation"),
            gxe.ExpectColumnValuesToBeUnique(column="user_id"),
            gxe.ExpectColumnValuesToBeInSet(column="gender", value_set=["M", "F"]),
            gxe.ExpectColumnValuesToBeBetween(column="age", min_value=1),
        ],
        "raw_match_products": [
            *_schema("raw_match_products", records.MatchProduct),
            *_non_empty("id", "title"),
            *_raw_text("title"),
            gxe.ExpectColumnValuesToBeUnique(column="id"),
            gxe.ExpectColumnValuesToBeBetween(column="price", min_value=0),
        ],
        "raw_match_pairs": [
            *_schema("raw_match_pairs", records.MatchPair),
            *_non_empty("ltable_id", "rtable_id"),
            gxe.ExpectColumnValuesToBeInSet(column="label", value_set=[0, 1]),
            gxe.ExpectCompoundColumnsToBeUnique(column_list=["ltable_id", "rtable_id"]),
        ],
    }


def _unified_split() -> list[Expectation]:
    """One split of the unified dataset (docs/unified-schema.md), checked on its own."""
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=[*COLUMNS, *DERIVED_COLUMNS], exact_match=True),
        *(gxe.ExpectColumnValuesToNotBeNull(column=name) for name in COLUMNS),
        *_non_empty(*UNIFIED_KEY_COLUMNS),
        *(
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=name, min_value=MIN_TEXT, max_value=MAX_TEXT
            )
            for name in UNIFIED_TEXT_COLUMNS
        ),
        gxe.ExpectColumnValuesToBeBetween(column="task_id", min_value=0, max_value=NUM_TASKS - 1),
        # Which tasks are present is the data's choice (a user may bring only some sources);
        # that a present task is in every split is checked across splits.
        gxe.ExpectColumnPairValuesToBeInSet(
            column_A="task_id",
            column_B="kind",
            value_pairs_set=[(task.id, task.kind.value) for task in TASKS],
        ),
        gxe.ExpectColumnPairValuesToBeInSet(
            column_A="task_id",
            column_B="task",
            value_pairs_set=[(task.id, task.code) for task in TASKS],
        ),
        # Generative rows: a non-empty reference response of bounded length.
        gxe.ExpectColumnValueLengthsToBeBetween(
            column="output", min_value=MIN_TEXT, max_value=MAX_TEXT, row_condition=GENERATIVE_ROWS
        ),
        # Embedding rows: one positive and at least one negative, passages of bounded length.
        gxe.ExpectColumnValuesToBeBetween(
            column=count_of("positives"), min_value=1, row_condition=EMBEDDING_ROWS
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column=count_of("negatives"), min_value=1, row_condition=EMBEDDING_ROWS
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column=SHORTEST_PASSAGE, min_value=MIN_TEXT, row_condition=EMBEDDING_ROWS
        ),
        gxe.ExpectColumnValuesToBeBetween(
            column=LONGEST_PASSAGE, max_value=MAX_TEXT, row_condition=EMBEDDING_ROWS
        ),
        # Choice tasks: options listed, and the reference answer is one of them.
        gxe.ExpectColumnValuesToBeBetween(
            column=count_of("options"),
            min_value=1,
            row_condition=Column("task_id").is_in(list(CHOICE_TASK_IDS)),
        ),
        gxe.ExpectColumnValuesToBeInSet(
            column=OUTPUT_IN_OPTIONS,
            value_set=[True],
            row_condition=Column("task_id").is_in(list(CHOICE_TASK_IDS)),
        ),
    ]


def _unified_across_splits() -> list[Expectation]:
    """The three splits stacked (one row per sample, with its split): rules between splits."""
    return [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(ACROSS_SPLITS_COLUMNS), exact_match=True),
        gxe.ExpectColumnDistinctValuesToEqualSet(column=SPLIT, value_set=list(SPLITS)),
        gxe.ExpectColumnValuesToBeUnique(column="id"),
        # A task present anywhere is present in every split (S2Sched needs its validation loss,
        # evaluation its test rows); any non-empty task set passes. Pairs name the task id.
        gxe.ExpectColumnPairValuesToBeInSet(
            column_A="task_id",
            column_B=TASK_IN_EVERY_SPLIT,
            value_pairs_set=[(task.id, True) for task in TASKS],
        ),
        # No leakage: nothing the test split asks for is taught by the train split.
        gxe.ExpectColumnValuesToBeInSet(
            column=TARGET_IN_TRAIN, value_set=[False], row_condition=Column(SPLIT) == "test"
        ),
    ]


def build_suites() -> dict[str, gx.ExpectationSuite]:
    """Every suite, by name: raw_<format> for each raw record type, unified_* for the dataset."""
    definitions = {
        **_raw_suites(),
        "unified_split": _unified_split(),
        "unified_across_splits": _unified_across_splits(),
    }
    return {
        name: gx.ExpectationSuite(name=name, expectations=expectations)
        for name, expectations in definitions.items()
    }


def suite_to_json(suite: gx.ExpectationSuite) -> str:
    """The suite as the JSON text stored in expectations/ (stable key order, trailing newline)."""
    return json.dumps(suite.to_json_dict(), indent=2, sort_keys=True) + "\n"


def write_suites(directory: str | Path) -> list[Path]:
    """Write every suite of `build_suites()` to `directory/<name>.json`; return the paths."""
    from recfound.atomic import atomic_file

    directory = Path(directory)
    written = []
    for name, suite in build_suites().items():
        path = directory / f"{name}.json"
        with atomic_file(path) as handle:
            handle.write(suite_to_json(suite))
        written.append(path)
    return written


def load_suites(directory: str | Path) -> dict[str, gx.ExpectationSuite]:
    """Read every `<name>.json` suite in `directory`; a malformed file is a DataError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "expectation suites directory not found")
    suites = {}
    for path in sorted(directory.glob("*.json")):
        try:
            raw: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
            suite = gx.ExpectationSuite(**raw)
        except (json.JSONDecodeError, TypeError, ValueError) as err:
            raise DataError(path, f"not a Great Expectations suite: {err}") from err
        # GX logs and drops an expectation it cannot build (e.g. a misspelt type); a suite
        # that silently checks less than its file says is worse than no suite.
        loaded = {e.expectation_type for e in suite.expectations}
        dropped = [e.get("type") for e in raw["expectations"] if e.get("type") not in loaded]
        if len(suite.expectations) != len(raw["expectations"]):
            raise DataError(path, f"expectation(s) GX could not load: {dropped}")
        suites[suite.name] = suite
    return suites


if __name__ == "__main__":  # pragma: no cover - `python -m recfound.data.gx_suites`
    from recfound.config import load_config

    for written_path in write_suites(load_config().validate_.suites):
        print(written_path)
