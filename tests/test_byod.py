"""Bring your own data: the task set follows the sources, all of the data, counted drops, the
stale-dataset refusal of the validate gate."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import datasets
import pytest

from recfound.config import BuildConfig, Config, Paths, SampleConfig
from recfound.data.build import BuildError, build_unified, plan_tasks, write_unified
from recfound.data.ingest import IngestError
from recfound.data.readers.discover import SAMPLE_MANIFEST
from recfound.data.sample import write_sample
from recfound.data.unified import BUILD_MANIFEST, present_tasks, read_manifest
from recfound.data.validate import check_built_from_current_data
from recfound.errors import RecFoundError, ValidationFailed

SAMPLE = SampleConfig(
    n_users=60,
    n_items=120,
    n_queries=80,
    n_questions=80,
    n_match_pairs=80,
    n_movies=40,
    n_movie_users=20,
)
CAPPED = BuildConfig(
    train_per_task=10, validation_per_task=3, test_per_task=5, embedding_test_per_task=7
)
ML_RATINGS = Path("movielens/ml-100k/u.data")
ML_USERS = Path("movielens/ml-100k/u.user")
SPLIT_FILES = ("state.json", "dataset_info.json", "data-00000-of-00001.arrow")


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's files as a user's own data: without the manifest that marks the bundled
    sample, so build.*_per_task (CAPPED) apply, not build.sample_caps."""
    raw = write_sample(tmp_path_factory.mktemp("raw") / "data", SAMPLE)
    (raw / SAMPLE_MANIFEST).unlink()
    return raw


def only(raw_dir: Path, tmp_path: Path, *sources: str) -> Path:
    """A data folder holding only `sources` of the sample."""
    data = tmp_path / "data"
    data.mkdir()
    for source in sources:
        shutil.copytree(raw_dir / source, data / source)
    return data


def codes(dataset: datasets.DatasetDict) -> list[str]:
    return [t.code for t in present_tasks(dataset)]


# --- the task set follows the data ------------------------------------------------------------


def test_movielens_alone_feeds_its_three_tasks_and_names_what_the_rest_need(
    raw_dir: Path, tmp_path: Path
) -> None:
    data = only(raw_dir, tmp_path, "movielens")
    result = write_unified(data, CAPPED, tmp_path / "unified")
    assert result.plan.tasks == ["U2I", "SR", "UP"]
    manifest = read_manifest(tmp_path / "unified")
    assert manifest["caps"] == {"train": 10, "validation": 3, "test": 5, "embedding_test": 7}
    assert manifest["skipped"]["Q2I"] == "needs esci"
    assert manifest["skipped"]["PM"] == "needs amazon_google"
    assert set(manifest["rows"]["U2I"]) == {"movielens"}
    dataset = datasets.load_from_disk(str(tmp_path / "unified"))
    assert codes(dataset) == ["U2I", "SR", "UP"]
    for split in ("train", "validation", "test"):
        assert set(dataset[split]["task"]) == {"U2I", "SR", "UP"}
    # embedding tasks are cheap to score: their test split has its own, larger size
    assert Counter(dataset["test"]["task"]) == {"U2I": 7, "SR": 5, "UP": 5}


def test_prompts_name_the_domain_a_row_came_from(raw_dir: Path) -> None:
    dataset = build_unified(raw_dir, CAPPED)["train"].filter(lambda r: r["task"] == "SR")
    by_source = {row["source"]: row["instruction"] for row in dataset}
    assert "watch" in by_source["movielens"] and "buy" not in by_source["movielens"]
    assert "buy" in by_source["amazon_reviews"]


def test_a_generative_only_data_folder_builds_pm_alone(raw_dir: Path, tmp_path: Path) -> None:
    data = only(raw_dir, tmp_path, "amazon_google")
    write_unified(data, CAPPED, tmp_path / "unified")
    dataset = datasets.load_from_disk(str(tmp_path / "unified"))
    assert codes(dataset) == ["PM"]
    assert set(dataset["test"]["kind"]) == {"generative"}
    read = {
        Path(f["file"]).name: f["read"]
        for f in read_manifest(tmp_path / "unified")["ingest"]["files"]
    }
    lines = {
        p.name: len(p.read_text().splitlines()) - 1 for p in (data / "amazon_google").iterdir()
    }
    assert read == lines  # every file counted, each data row read (header excluded)


def test_build_tasks_narrows_the_set_to_embedding_tasks(raw_dir: Path) -> None:
    cfg = CAPPED.model_copy(update={"tasks": ("U2I", "Q2I", "I2I")})
    dataset = build_unified(raw_dir, cfg)
    assert codes(dataset) == ["U2I", "Q2I", "I2I"]
    assert set(dataset["train"]["kind"]) == {"embedding"}


def test_asking_for_a_task_the_data_cannot_feed_names_its_source(
    raw_dir: Path, tmp_path: Path
) -> None:
    data = only(raw_dir, tmp_path, "movielens")
    with pytest.raises(RecFoundError, match="Q2I, which needs esci"):
        build_unified(data, CAPPED.model_copy(update={"tasks": ("U2I", "Q2I")}))


def test_no_feedable_task_fails_before_anything_is_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "notes").mkdir(parents=True)
    (data / "README.txt").write_text("my data\n")
    with pytest.raises(RecFoundError, match="no task can be built from the data"):
        plan_tasks((), None)
    with pytest.raises(RecFoundError, match="no task can be built"):
        build_unified(data, CAPPED)


def test_unknown_task_codes_are_config_errors() -> None:
    with pytest.raises(ValueError, match="unknown task"):
        BuildConfig(tasks=("U2I", "XYZ"))


# --- all of the data --------------------------------------------------------------------------


def test_uncapped_splits_keep_every_sample_and_the_test_split_does_not_move(
    raw_dir: Path,
) -> None:
    capped = build_unified(raw_dir, CAPPED)
    uncapped = build_unified(
        raw_dir, CAPPED.model_copy(update={"train_per_task": None, "validation_per_task": None})
    )
    assert uncapped["test"]["id"] == capped["test"]["id"]
    assert uncapped["train"].num_rows > 5 * capped["train"].num_rows
    for task in present_tasks(uncapped):
        validation = uncapped["validation"].filter(lambda r, c=task.code: r["task"] == c)
        assert validation.num_rows >= 1, task.code
    # Leave-last-out: every eligible user has one validation row per sequence task.
    u2i_val = uncapped["validation"].filter(lambda r: r["task"] == "U2I")
    assert u2i_val.num_rows == len(set(u2i_val["user_id"])) > CAPPED.validation_per_task
    # No train target is a test target, uncapped too.
    for task in present_tasks(uncapped):
        test = set(uncapped["test"].filter(lambda r, c=task.code: r["task"] == c)["target_key"])
        train = uncapped["train"].filter(lambda r, c=task.code: r["task"] == c)["target_key"]
        assert not test & set(train), task.code


# --- ingestion: nothing dropped without a count ------------------------------------------------


def append(path: Path, lines: list[str]) -> None:
    with path.open("a", encoding="iso-8859-1") as handle:
        handle.writelines(line + "\n" for line in lines)


def ratings_counts(out: Path) -> dict:
    files = read_manifest(out)["ingest"]["files"]
    return next(f for f in files if f["file"].endswith("u.data"))


def test_duplicates_are_dropped_counted_and_the_last_listed_is_kept(
    raw_dir: Path, tmp_path: Path
) -> None:
    data = only(raw_dir, tmp_path, "movielens")
    first = (data / ML_RATINGS).read_text(encoding="iso-8859-1").splitlines()[0]
    user, item, rating, stamp = first.split("\t")
    other = "1" if rating != "1" else "2"
    append(data / ML_RATINGS, [first, f"{user}\t{item}\t{other}\t{stamp}"])
    read = len((data / ML_RATINGS).read_text(encoding="iso-8859-1").splitlines())
    result = write_unified(data, CAPPED, tmp_path / "unified")
    counts = ratings_counts(tmp_path / "unified")
    assert counts["read"] == read
    assert counts["dropped"] == {"duplicate": 1, "conflicting_duplicate": 1}
    assert counts["kept"] == read - 2
    assert f"user ml-100k:{user}" in counts["examples"]["duplicate"][0]
    assert result.report.files[str(data / ML_RATINGS)].kept == read - 2


def test_interactions_without_metadata_over_the_limit_fail_with_file_count_and_examples(
    raw_dir: Path, tmp_path: Path
) -> None:
    data = only(raw_dir, tmp_path, "movielens")
    append(data / ML_RATINGS, [f"1\t{90000 + i}\t4\t881250949" for i in range(40)])
    with pytest.raises(IngestError) as info:
        build_unified(data, CAPPED)
    message = str(info.value)
    assert str(data / ML_RATINGS) in message and "40 of" in message
    assert "no metadata" in message and "movie 90000" in message
    # Within a raised limit the same rows are dropped and counted, and the build goes on.
    lenient = CAPPED.model_copy(
        update={"max_drop_share": CAPPED.max_drop_share.model_copy(update={"no_metadata": 0.5})}
    )
    write_unified(data, lenient, tmp_path / "unified")
    assert ratings_counts(tmp_path / "unified")["dropped"] == {"no_metadata": 40}


def test_users_under_min_interactions_are_counted(raw_dir: Path, tmp_path: Path) -> None:
    data = only(raw_dir, tmp_path, "movielens")
    item = (data / ML_RATINGS).read_text(encoding="iso-8859-1").split("\t")[1]
    append(data / ML_RATINGS, [f"{5000 + u}\t{item}\t3\t881250949" for u in range(3)])
    append(data / ML_USERS, [f"{5000 + u}|30|F|writer|12345" for u in range(3)])
    loose = CAPPED.model_copy(
        update={"max_drop_share": CAPPED.max_drop_share.model_copy(update={"short_user": 1.0})}
    )
    write_unified(data, loose, tmp_path / "unified")
    assert ratings_counts(tmp_path / "unified")["dropped"] == {"short_user": 3}


def test_ratings_of_users_the_users_file_lacks_are_dropped_counted_and_limited(
    raw_dir: Path, tmp_path: Path
) -> None:
    data = only(raw_dir, tmp_path, "movielens")
    lines = (data / ML_RATINGS).read_text(encoding="iso-8859-1").splitlines()
    item = lines[0].split("\t")[1]
    strangers = len(lines) // 10  # 9 % of the ratings, by users u.user does not list
    append(data / ML_RATINGS, [f"{7000 + u}\t{item}\t3\t881250949" for u in range(strangers)])
    with pytest.raises(IngestError) as info:
        build_unified(data, CAPPED)
    message = str(info.value)
    assert str(data / ML_RATINGS) in message and f"{strangers} of" in message
    assert "users file (u.user, users.dat) does not list" in message
    assert "build.max_drop_share.unknown_user = 5.0%" in message and "user 7000" in message
    lenient = CAPPED.model_copy(
        update={"max_drop_share": CAPPED.max_drop_share.model_copy(update={"unknown_user": 0.5})}
    )
    write_unified(data, lenient, tmp_path / "unified")
    assert ratings_counts(tmp_path / "unified")["dropped"] == {"unknown_user": strangers}
    files = {f["file"]: f for f in read_manifest(tmp_path / "unified")["ingest"]["files"]}
    users = len((data / ML_USERS).read_text().splitlines())
    assert files[str(data / ML_USERS)]["read"] == files[str(data / ML_USERS)]["kept"] == users


# --- the gate checks what it gates ----------------------------------------------------------


def test_validate_refuses_a_dataset_built_from_other_raw_data(
    raw_dir: Path, tmp_path: Path
) -> None:
    data = only(raw_dir, tmp_path, "amazon_google")
    cfg = Config(paths=Paths(data=data, unified=tmp_path / "unified"), build=CAPPED)
    with pytest.raises(RecFoundError, match="unified dataset not found"):
        check_built_from_current_data(cfg)
    write_unified(data, CAPPED, cfg.paths.unified)
    check_built_from_current_data(cfg)  # fresh: passes
    manifest = json.loads((cfg.paths.unified / BUILD_MANIFEST).read_text())
    assert len(manifest["data_fingerprint"]) == 32
    # The raw data changes and the build fails (or is not run): the old dataset is refused.
    with (data / "amazon_google" / "test.csv").open("a") as handle:
        handle.write("")
    (data / "amazon_google" / "train.csv").write_text(
        (data / "amazon_google" / "test.csv").read_text()
    )
    with pytest.raises(BuildError):
        write_unified(data, CAPPED, cfg.paths.unified)
    with pytest.raises(ValidationFailed, match="built from other raw data"):
        check_built_from_current_data(cfg)


def test_the_same_data_builds_the_same_dataset_fingerprint(raw_dir: Path, tmp_path: Path) -> None:
    """Training resumes only under the same dataset fingerprint (recfound.train.loop)."""
    for name in ("a", "b"):
        write_unified(raw_dir, CAPPED, tmp_path / name)
    a, b = (datasets.load_from_disk(str(tmp_path / n)) for n in ("a", "b"))
    assert [s._fingerprint for s in a.values()] == [s._fingerprint for s in b.values()]


def test_the_build_writes_the_layout_of_datasets_save_to_disk(
    raw_dir: Path, tmp_path: Path
) -> None:
    """The build streams its splits to disk itself; the files must be what save_to_disk of
    the same dataset writes, so that `datasets.load_from_disk` reads them now and later."""
    write_unified(raw_dir, CAPPED, tmp_path / "built")
    loaded = datasets.load_from_disk(str(tmp_path / "built"))
    loaded.save_to_disk(str(tmp_path / "saved"))
    for name in ("dataset_dict.json", *(f"{s}/{f}" for s in loaded for f in SPLIT_FILES)):
        built, saved = (tmp_path / d / name for d in ("built", "saved"))
        if name.endswith("state.json"):  # the fingerprint is ours: a hash of the rows
            ours, theirs = json.loads(built.read_text()), json.loads(saved.read_text())
            ours.pop("_fingerprint"), theirs.pop("_fingerprint")
            assert ours == theirs, name
        elif name.endswith(".json"):
            assert json.loads(built.read_text()) == json.loads(saved.read_text()), name
        else:
            assert built.read_bytes() == saved.read_bytes(), name


def test_the_raw_suites_run_alone_before_any_build(raw_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recfound.cli import app

    data = only(raw_dir, tmp_path, "movielens")
    cfg = Config(
        paths=Paths(
            data=data,
            unified=tmp_path / "no-unified-here",
            validation_raw=tmp_path / "validation_raw",
        )
    )
    params = tmp_path / "params.yaml"
    params.write_text(json.dumps(cfg.model_dump(mode="json", by_alias=True)))
    done = CliRunner().invoke(app, ["stage", "validate", "--raw-only", "--params", str(params)])
    assert done.exit_code == 0, done.output
    report = json.loads((tmp_path / "validation_raw" / "report.json").read_text())
    assert report["success"]
    assert {v["suite"] for v in report["validations"]} == {
        "raw_ratings",
        "raw_movies",
        "raw_movie_users",
    }
    refused = CliRunner().invoke(app, ["stage", "build", "--raw-only", "--params", str(params)])
    assert refused.exit_code != 0 and "validate stage only" in refused.output


def test_a_task_its_source_cannot_fill_is_skipped_with_the_reason_or_refused_when_asked(
    raw_dir: Path, tmp_path: Path
) -> None:
    data = only(raw_dir, tmp_path, "movielens", "amazon_google")
    no_user_is_long_enough = CAPPED.model_copy(
        update={
            "min_interactions": 10_000,
            "max_drop_share": CAPPED.max_drop_share.model_copy(update={"short_user": 1.0}),
        }
    )
    result = write_unified(data, no_user_is_long_enough, tmp_path / "unified")
    assert result.plan.tasks == ["PM"]
    assert result.plan.skipped["U2I"].startswith("no train/validation/test samples from")
    asked = no_user_is_long_enough.model_copy(update={"tasks": ("U2I", "PM")})
    with pytest.raises(BuildError, match="U2I/train: no train/validation/test samples"):
        write_unified(data, asked, tmp_path / "unified")
