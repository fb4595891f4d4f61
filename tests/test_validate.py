"""The validation gate: GX suites pass good data and stop the pipeline on bad data, saying why."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from recfound.config import Config
from recfound.data import gx_suites, validate
from recfound.data.gx_frames import raw_batches, reservoir_sample
from recfound.data.schema import FEATURES, SPLITS
from recfound.errors import DataError, ValidationFailed
from recfound.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
ROWS_PER_TASK = 2
LETTERS = ["A", "B", "C", "D"]


def _row(split: str, task, index: int) -> dict:
    """A well-formed unified row of `task`; ids and target keys differ per split and row."""
    key = f"{split}-{task.code}-{index}"
    row = {name: "" for name in FEATURES}
    row.update(
        id=key,
        task_id=task.id,
        task=task.code,
        kind=task.kind.value,
        instruction=f"Instruction for {task.code}",
        input=f"input text {key}",
        category="Books",
        target_key=f"target:{key}",
        source="sample",
        options=[],
        option_ids=[],
        positives=[],
        positive_ids=[],
        negatives=[],
        negative_ids=[],
    )
    if task.is_embedding:
        row.update(
            positives=["a positive passage"],
            positive_ids=["p1"],
            negatives=["a negative passage", "another one"],
            negative_ids=["n1", "n2"],
        )
    elif task.id in gx_suites.CHOICE_TASK_IDS:
        row.update(output="B", options=LETTERS)
    else:
        row.update(output=f"reference answer {key}")
    return row


def _rows(split: str) -> list[dict]:
    return [_row(split, task, i) for task in TASKS for i in range(ROWS_PER_TASK)]


def _dataset(rows_by_split: dict[str, list[dict]]) -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(rows, features=FEATURES)
            for split, rows in rows_by_split.items()
        }
    )


def _save(rows_by_split: dict[str, list[dict]], path: Path) -> Path:
    _dataset(rows_by_split).save_to_disk(str(path))
    return path


@pytest.fixture(autouse=True)
def _hand_made_datasets_pass_the_build_gate(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests save unified datasets by hand, without a build and its build.json; the
    gate that refuses a dataset built from other raw data is tested in test_byod.py."""
    monkeypatch.setattr(validate, "check_built_from_current_data", lambda cfg: None)


@pytest.fixture
def good_rows() -> dict[str, list[dict]]:
    return {split: _rows(split) for split in SPLITS}


def _config(tmp_path: Path, **validate_overrides) -> Config:
    return Config.model_validate(
        {
            "paths": {
                "data": str(tmp_path / "data"),
                "unified": str(tmp_path / "unified"),
                "validation": str(tmp_path / "reports" / "validation"),
            },
            "validate": {"suites": str(ROOT / "expectations"), **validate_overrides},
        }
    )


def _run_expecting_failure(cfg: Config) -> str:
    with pytest.raises(ValidationFailed) as failure:
        validate.run(cfg)
    return str(failure.value)


def _report(cfg: Config) -> dict:
    return json.loads((cfg.paths.validation / validate.REPORT_NAME).read_text())


def test_checked_in_suites_are_exactly_the_suites_defined_in_code():
    checked_in = gx_suites.load_suites(ROOT / "expectations")
    defined = gx_suites.build_suites()
    assert checked_in.keys() == defined.keys()
    for name, suite in defined.items():
        stored = (ROOT / "expectations" / f"{name}.json").read_text()
        assert stored == gx_suites.suite_to_json(suite), (
            f"expectations/{name}.json is stale: run `python -m recfound.data.gx_suites`"
        )


def test_a_malformed_suite_file_is_a_data_error_naming_it(tmp_path):
    (tmp_path / "broken.json").write_text('{"name": "broken", "expectations": [{"type": 1}]')
    with pytest.raises(DataError, match=r"broken\.json: not a Great Expectations suite"):
        gx_suites.load_suites(tmp_path)


def test_a_suite_file_with_an_unknown_expectation_is_a_data_error(tmp_path):
    suite = {"name": "typo", "expectations": [{"type": "expect_colum_to_exist", "kwargs": {}}]}
    (tmp_path / "typo.json").write_text(json.dumps(suite))
    unknown = r"typo\.json: expectation\(s\) GX could not load: \['expect_colum_to_exist'\]"
    with pytest.raises(DataError, match=unknown):
        gx_suites.load_suites(tmp_path)


def test_a_good_dataset_passes_and_writes_report_and_data_docs(tmp_path, good_rows):
    cfg = _config(tmp_path)
    _save(good_rows, cfg.paths.unified)
    validate.run(cfg)
    report = _report(cfg)
    assert report["success"] is True
    suites = [v["suite"] for v in report["validations"]]
    assert suites == ["unified_split"] * 3 + ["unified_across_splits"]
    assert all(v["rows_validated"] == len(TASKS) * ROWS_PER_TASK for v in report["validations"][:3])
    docs = cfg.paths.validation / validate.DATA_DOCS_DIR
    assert (docs / "index.html").is_file()
    assert list((docs / "validations").rglob("*.html")), "no validation page in the Data Docs"
    assert not list(cfg.paths.validation.parent.glob(".validation.tmp-*")), "temp dir left over"


def test_a_task_missing_from_a_split_fails_naming_the_task(tmp_path, good_rows):
    cfg = _config(tmp_path)
    good_rows["validation"] = [r for r in good_rows["validation"] if r["task"] != "PRP"]
    _save(good_rows, cfg.paths.unified)
    message = _run_expecting_failure(cfg)
    where = "suite unified_across_splits on unified/all: "
    expectation = "expect_column_pair_values_to_be_in_set(task_id, task_in_every_split)"
    # PRP is task 5: its train and test rows are the bad ones, and the examples name it.
    assert f"{where}{expectation}: {2 * ROWS_PER_TASK} bad rows" in message
    assert "e.g. [[5, False]" in message
    assert "suite unified_split" not in message  # each split on its own is fine


@pytest.mark.parametrize(
    "codes",
    [("SR", "UP", "U2I"), ("PM",), ("U2I", "Q2I", "I2I")],
    ids=["movielens-like", "generative-only", "embedding-only"],
)
def test_a_dataset_with_only_some_tasks_passes_the_unified_suites(tmp_path, codes):
    cfg = _config(tmp_path)
    subset = [task for task in TASKS if task.code in codes]
    rows = {split: [_row(split, t, i) for t in subset for i in range(2)] for split in SPLITS}
    _save(rows, cfg.paths.unified)
    validate.run(cfg)
    assert _report(cfg)["success"] is True


def test_a_duplicated_id_across_splits_fails_with_the_bad_row_count(tmp_path, good_rows):
    cfg = _config(tmp_path)
    good_rows["test"][0]["id"] = good_rows["train"][0]["id"]
    _save(good_rows, cfg.paths.unified)
    message = _run_expecting_failure(cfg)
    assert (
        "suite unified_across_splits on unified/all: "
        "expect_column_values_to_be_unique(id): 2 bad rows" in message
    )


def test_a_test_target_seen_in_train_fails_as_leakage(tmp_path, good_rows):
    cfg = _config(tmp_path)
    for row in good_rows["test"][:3]:
        row["target_key"] = good_rows["train"][0]["target_key"]
    _save(good_rows, cfg.paths.unified)
    message = _run_expecting_failure(cfg)
    assert (
        "suite unified_across_splits on unified/all: "
        "expect_column_values_to_be_in_set(target_in_train): 3 bad rows" in message
    )


def test_task_id_13_fails_and_the_report_and_data_docs_say_why(tmp_path, good_rows):
    cfg = _config(tmp_path)
    good_rows["train"][-1]["task_id"] = 13
    _save(good_rows, cfg.paths.unified)
    message = _run_expecting_failure(cfg)
    assert (
        "suite unified_split on unified/train: "
        "expect_column_values_to_be_between(task_id): 1 bad rows" in message
    )
    # The (task_id, kind) pair is no task's either.
    assert "expect_column_pair_values_to_be_in_set(task_id, kind): 1 bad rows" in message
    # A failed run leaves its report and Data Docs where the message says.
    assert str(cfg.paths.validation / validate.REPORT_NAME) in message
    assert (cfg.paths.validation / validate.DATA_DOCS_DIR / "index.html").is_file()
    report = _report(cfg)
    assert report["success"] is False
    train = next(v for v in report["validations"] if v["batch"] == "unified/train")
    failed = {(e["type"], e["column"]): e for e in train["expectations"] if not e["success"]}
    assert failed.keys() == {
        ("expect_column_values_to_be_between", "task_id"),
        ("expect_column_pair_values_to_be_in_set", "task_id, kind"),
        ("expect_column_pair_values_to_be_in_set", "task_id, task"),
    }
    task_range = failed[("expect_column_values_to_be_between", "task_id")]
    assert task_range["unexpected_count"] == 1 and task_range["unexpected_examples"] == [13]


def test_a_split_whose_columns_differ_from_the_schema_fails_naming_them(tmp_path, good_rows):
    cfg = _config(tmp_path)
    dataset = _dataset(good_rows)
    test = dataset["test"].remove_columns("category")
    dataset["test"] = test.add_column("extra", [""] * test.num_rows)
    dataset.save_to_disk(str(cfg.paths.unified))
    message = _run_expecting_failure(cfg)
    assert (
        "suite unified_split on unified/test: expect_table_columns_to_match_set: "
        "missing ['category']; unexpected ['extra']" in message
    )


@pytest.mark.parametrize("empty_value", [None, ""])
def test_a_missing_or_empty_required_text_fails(tmp_path, good_rows, empty_value):
    cfg = _config(tmp_path)
    for row in good_rows["test"][:2]:
        row["input"] = empty_value
    _save(good_rows, cfg.paths.unified)
    message = _run_expecting_failure(cfg)
    expectation = (
        "expect_column_values_to_not_be_null(input)"
        if empty_value is None
        else "expect_column_value_lengths_to_be_between(input)"
    )
    assert f"suite unified_split on unified/test: {expectation}: 2 bad rows" in message


def test_an_over_long_text_fails_against_the_configured_bound(tmp_path, good_rows):
    cfg = _config(tmp_path, max_text_chars=100)
    good_rows["train"][-1]["output"] = "x" * 101  # AG: a generative task without options
    _save(good_rows, cfg.paths.unified)
    message = _run_expecting_failure(cfg)
    assert (
        "suite unified_split on unified/train: "
        "expect_column_value_lengths_to_be_between(output): 1 bad rows" in message
    )


def test_a_huge_bad_value_is_quoted_short_in_the_report_and_the_data_docs(tmp_path, good_rows):
    cfg = _config(tmp_path, max_text_chars=100)
    good_rows["train"][-1]["output"] = "y" * 2_000_000  # one 2 MB answer
    _save(good_rows, cfg.paths.unified)
    _run_expecting_failure(cfg)
    report = (cfg.paths.validation / validate.REPORT_NAME).read_text()
    assert len(report) < 200_000 and "(2,000,000 chars)" in report
    docs = cfg.paths.validation / validate.DATA_DOCS_DIR
    pages = [p for p in docs.rglob("*.html") if "y" * 1000 in p.read_text()]
    assert pages == []
    assert any("y" * 300 in p.read_text() for p in docs.rglob("*.html"))


def test_rows_break_the_rules_of_their_kind_of_task(tmp_path, good_rows):
    cfg = _config(tmp_path)
    train = {row["task"]: row for row in good_rows["train"]}
    train["U2I"]["negatives"], train["U2I"]["negative_ids"] = [], []  # embedding: no negative
    train["QR"]["output"] = ""  # generative: no reference output
    train["SA"]["output"] = "Z"  # choice task: answer not among the options
    train["I2I"]["positives"] = None  # a null list: flagged, not a crash
    _save(good_rows, cfg.paths.unified)
    message = _run_expecting_failure(cfg)
    where = "suite unified_split on unified/train: "
    assert where + "expect_column_values_to_be_between(negatives_count): 1 bad rows" in message
    assert where + "expect_column_value_lengths_to_be_between(output): 1 bad rows" in message
    assert where + "expect_column_values_to_be_in_set(output_in_options): 1 bad rows" in message
    assert where + "expect_column_values_to_not_be_null(positives): 1 bad rows" in message
    assert where + "expect_column_values_to_be_between(positives_count): 1 bad rows" in message
    assert message.count(where) == 5


def _write_reviews(path: Path, ratings: list[float]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "rating": rating,
                "title": "Fine",
                "text": "Does what it says.",
                "asin": f"B0{i}",
                "parent_asin": f"B0{i}",
                "user_id": f"U{i}",
                "timestamp": 1_600_000_000_000 + i,
            }
        )
        for i, rating in enumerate(ratings)
    ]
    path.write_text("\n".join(lines) + "\n")


def _write_item_meta(path: Path, n_items: int) -> None:
    lines = [
        json.dumps({"parent_asin": f"B0{i}", "title": f"Item {i}", "average_rating": 4.0})
        for i in range(n_items)
    ]
    path.write_text("\n".join(lines) + "\n")


def test_a_raw_review_of_half_a_star_fails_the_raw_reviews_suite(tmp_path, good_rows):
    cfg = _config(tmp_path)
    reviews_dir = cfg.paths.data / "amazon_reviews"
    # 2.5 passes the reader's 1-5 range check; the suite wants whole stars.
    _write_reviews(reviews_dir / "Books.jsonl", [5.0, 2.5, 3.0])
    _write_item_meta(reviews_dir / "meta_Books.jsonl", 3)
    _save(good_rows, cfg.paths.unified)
    message = _run_expecting_failure(cfg)
    assert (
        "suite raw_reviews on amazon_reviews/Books.jsonl: "
        "expect_column_values_to_be_in_set(rating): 1 bad rows of 3 checked, e.g. [2.5]"
    ) in message
    report = _report(cfg)
    meta = next(v for v in report["validations"] if v["suite"] == "raw_item_meta")
    assert meta["success"] is True and meta["batch"] == "amazon_reviews/meta_Books.jsonl"


def test_a_large_raw_file_is_validated_on_a_bounded_seeded_sample(tmp_path):
    reviews_dir = tmp_path / "data" / "amazon_reviews"
    _write_reviews(reviews_dir / "Books.jsonl", [4.0] * 10)
    _write_item_meta(reviews_dir / "meta_Books.jsonl", 10)
    first, again = (list(raw_batches(tmp_path / "data", sample_rows=4, seed=7)) for _ in "ab")
    reviews = first[0]
    assert (reviews.suite, reviews.name) == ("raw_reviews", "amazon_reviews/Books.jsonl")
    assert (reviews.rows_read, len(reviews.frame)) == (10, 4)
    assert reviews.frame["user_id"].tolist() == again[0].frame["user_id"].tolist()


def test_reservoir_sample_is_uniform_bounded_and_keeps_short_streams_whole():
    import random

    assert reservoir_sample(range(3), 5, random.Random(0)) == ([0, 1, 2], 3)
    sample, seen = reservoir_sample(range(1000), 10, random.Random(0))
    assert seen == 1000 and len(sample) == 10 and len(set(sample)) == 10
    assert sample == reservoir_sample(range(1000), 10, random.Random(0))[0]  # seeded
    # Uniform: over many draws every item is kept with probability size / n = 0.1.
    counts = [0] * 20
    rng = random.Random(1)
    for _ in range(2000):
        for item in reservoir_sample(range(20), 2, rng)[0]:
            counts[item] += 1
    assert all(150 < c < 250 for c in counts), counts  # expected 200 each
