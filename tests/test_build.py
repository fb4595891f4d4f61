"""The build stage: raw sample -> unified 13-task dataset; split rules; bad-input errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path

import datasets
import pytest

from recfound.config import BuildConfig, Config, Paths, SampleCaps, SampleConfig
from recfound.data.build import BuildError, build_unified, run, write_unified
from recfound.data.catalogue import read_catalogue
from recfound.data.ingest import REPEATED_TITLE
from recfound.data.readers import (
    NOTE_READ_AS_UTF8,
    LineTooLongError,
    discover_sources,
    read_esci,
    read_item_meta,
    read_movies,
    read_ratings,
    read_reviews,
)
from recfound.data.sample import write_sample
from recfound.data.schema import FEATURES, SPLITS
from recfound.data.tasks.catalog import MOVIES_CATEGORY, ItemInfo, same_title_key, scoped_id
from recfound.data.tasks.common import LETTERS
from recfound.data.tasks.search import rewrite_query
from recfound.data.tasks.sequences import user_profile
from recfound.errors import DataError, RecFoundError
from recfound.tasks import EMBEDDING_TASK_IDS, TASKS

SAMPLE = SampleConfig(
    n_users=80,
    n_items=160,
    n_queries=120,
    n_questions=120,
    n_match_pairs=100,
    n_movies=48,
    n_movie_users=20,
)
CAPS = {"train_per_task": 12, "validation_per_task": 4, "test_per_task": 6}
CAPS["embedding_test_per_task"] = 6
# the same caps whether the build takes data/ for the bundled sample or not (recfound.data.bundled)
BUILD = BuildConfig(**CAPS, sample_caps=SampleCaps(**CAPS))


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("raw") / "data", SAMPLE)


@pytest.fixture(scope="module")
def unified(raw_dir: Path) -> datasets.DatasetDict:
    return build_unified(raw_dir, BUILD)


@pytest.fixture
def raw_copy(raw_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the raw sample, for tests that damage it."""
    return Path(shutil.copytree(raw_dir, tmp_path / "data"))


def rows(dataset: datasets.DatasetDict, split: str, code: str) -> list[dict]:
    return [row for row in dataset[split] if row["task"] == code]


def raw_sequences(raw_dir: Path) -> dict[str, list[tuple[int, str]]]:
    """user -> [(timestamp, item)] oldest first, straight from the raw files."""
    sources = discover_sources(raw_dir)
    sequences: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for files in sources.amazon_reviews:
        for review in read_reviews(files.reviews):
            sequences[review.user_id].append((review.timestamp, review.parent_asin))
    for files in sources.movielens:
        for rating in read_ratings(files.ratings):
            user = scoped_id(files.variant, rating.user_id)
            sequences[user].append((rating.timestamp, scoped_id(files.variant, rating.item_id)))
    return {user: sorted(events) for user, events in sequences.items()}


def item_categories(raw_dir: Path) -> dict[str, str]:
    sources = discover_sources(raw_dir)
    categories = {
        meta.parent_asin: files.category
        for files in sources.amazon_reviews
        for meta in read_item_meta(files.meta)
    }
    for files in sources.movielens:
        for movie in read_movies(files.movies):
            categories[scoped_id(files.variant, movie.item_id)] = MOVIES_CATEGORY
    return categories


def test_build_gives_all_13_tasks_in_every_split_with_the_schema(
    unified: datasets.DatasetDict,
) -> None:
    assert tuple(unified) == SPLITS
    wanted = {"train": BUILD.train_per_task, "validation": 4, "test": 6}
    for split in SPLITS:
        assert unified[split].features == FEATURES
        counts = {t.code: len(rows(unified, split, t.code)) for t in TASKS}
        assert counts == {t.code: wanted[split] for t in TASKS}, split
        for row in unified[split]:
            kind = "embedding" if row["task_id"] in EMBEDDING_TASK_IDS else "generative"
            assert row["kind"] == kind and row["instruction"] and row["input"]
            assert bool(row["output"]) == (kind == "generative")
            assert bool(row["positives"]) == (kind == "embedding")


def test_held_out_targets_are_each_users_latest_interactions(
    unified: datasets.DatasetDict, raw_dir: Path
) -> None:
    sequences = raw_sequences(raw_dir)
    for split, from_end in (("test", 1), ("validation", 2)):
        for row in rows(unified, split, "U2I"):
            assert row["positive_ids"] == [sequences[row["user_id"]][-from_end][1]]
        for row in rows(unified, split, "SR"):
            answer = row["option_ids"][LETTERS.index(row["output"])]
            assert answer == sequences[row["user_id"]][-from_end][1]
        for row in rows(unified, split, "UP"):
            timestamp = int(row["target_key"].rsplit("@", 1)[1])
            assert timestamp == sequences[row["user_id"]][-from_end][0]


def test_training_targets_come_before_the_held_out_ones(
    unified: datasets.DatasetDict, raw_dir: Path
) -> None:
    sequences = raw_sequences(raw_dir)
    for row in rows(unified, "train", "U2I"):
        items = [item for _, item in sequences[row["user_id"]]]
        position = items.index(row["positive_ids"][0])
        assert 1 <= position <= len(items) - 3
        history = [line.split(". ", 1)[1] for line in row["input"].splitlines()]
        assert len(history) == min(position, BUILD.max_history)


def test_no_test_target_is_a_training_target(unified: datasets.DatasetDict) -> None:
    for task in TASKS:
        train = {row["target_key"] for row in rows(unified, "train", task.code)}
        test = {row["target_key"] for row in rows(unified, "test", task.code)}
        assert not train & test, task.code


def test_embedding_negatives_share_the_positive_category(
    unified: datasets.DatasetDict, raw_dir: Path
) -> None:
    categories = item_categories(raw_dir)
    for split in SPLITS:
        wanted = BUILD.hard_negatives if split == "train" else BUILD.eval_negatives
        for row in (r for r in unified[split] if r["kind"] == "embedding"):
            assert len(row["negative_ids"]) == len(row["negatives"]) == wanted
            assert len(set(row["negative_ids"])) == wanted
            assert {categories[i] for i in row["negative_ids"]} == {row["category"]}
            assert not set(row["negative_ids"]) & set(row["positive_ids"])
            if row["task"] != "I2I":
                assert categories[row["positive_ids"][0]] == row["category"]


def test_user_negatives_are_items_the_user_never_had(
    unified: datasets.DatasetDict, raw_dir: Path
) -> None:
    sequences = raw_sequences(raw_dir)
    for split in SPLITS:
        for row in rows(unified, split, "U2I"):
            history = {item for _, item in sequences[row["user_id"]]}
            assert not set(row["negative_ids"]) & history


def test_q2i_positive_is_an_exact_match_and_never_a_negative(
    unified: datasets.DatasetDict, raw_dir: Path
) -> None:
    (files,) = discover_sources(raw_dir).esci
    labels = {(e.query_id, e.product_id): e.esci_label for e in read_esci(*vars(files).values())}
    for split in SPLITS:
        for row in rows(unified, split, "Q2I"):
            query_id = int(row["target_key"].split(":")[1])
            assert labels[(query_id, row["positive_ids"][0])] == "E"
            assert all(labels.get((query_id, n)) not in ("E", "S") for n in row["negative_ids"])


def test_i2i_rows_have_several_positives_from_bought_together(
    unified: datasets.DatasetDict, raw_dir: Path
) -> None:
    together = {
        meta.parent_asin: set(meta.bought_together)
        for files in discover_sources(raw_dir).amazon_reviews
        for meta in read_item_meta(files.meta)
    }
    i2i = [row for split in SPLITS for row in rows(unified, split, "I2I")]
    assert any(len(row["positive_ids"]) > 1 for row in i2i)
    assert all(len(row["positive_ids"]) <= BUILD.i2i_positives for row in i2i)
    for row in i2i:
        anchor = row["target_key"].split(":", 1)[1]
        listed = together[anchor]
        if listed:  # bought_together comes first, co-purchases fill up after it
            assert row["positive_ids"][0] in listed


def test_sr_lists_20_lettered_candidates_with_the_answer_at_a_seeded_letter(
    unified: datasets.DatasetDict,
) -> None:
    letters = list(LETTERS[:20])
    answers = []
    for split in SPLITS:
        for row in rows(unified, split, "SR"):
            assert row["options"] == letters
            assert len(row["option_ids"]) == len(set(row["option_ids"])) == 20
            assert row["output"] in letters
            listed = row["input"].split("Candidates:\n")[1].splitlines()
            assert [line.split(". ", 1)[0] for line in listed] == letters
            answers.append(row["output"])
    assert len(set(answers)) > 5  # not always the same position


def test_lettered_and_yes_no_outputs_are_among_the_options(unified: datasets.DatasetDict) -> None:
    expected = {"SA": list("ABCDE"), "PRP": list("ABC"), "AP": ["yes", "no"], "PM": ["yes", "no"]}
    for split in SPLITS:
        for code, options in expected.items():
            outputs = set()
            for row in rows(unified, split, code):
                assert row["options"] == options and row["output"] in options
                outputs.add(row["output"])
            assert len(outputs) > 1, f"{code}/{split} has a single label"


def test_ave_output_is_json_whose_values_appear_in_their_source(
    unified: datasets.DatasetDict,
) -> None:
    for row in rows(unified, "test", "AVE"):
        fields = {
            line.split(": ", 1)[0].lower(): line.split(": ", 1)[1].lower()
            for line in row["input"].splitlines()
        }
        found = json.loads(row["output"])
        assert found and all(set(f) == {"attribute", "value", "source"} for f in found)
        assert all(f["value"].lower() in fields[f["source"]] for f in found)


def test_ids_are_unique_and_rows_identical_across_two_builds(
    unified: datasets.DatasetDict, raw_dir: Path
) -> None:
    ids = [row_id for split in SPLITS for row_id in unified[split]["id"]]
    assert len(ids) == len(set(ids))
    again = build_unified(raw_dir, BUILD)
    for split in SPLITS:
        assert again[split].to_list() == unified[split].to_list()


def test_a_different_seed_selects_different_rows(
    raw_dir: Path, unified: datasets.DatasetDict
) -> None:
    other = build_unified(raw_dir, BUILD.model_copy(update={"seed": 99}))
    assert set(other["test"]["id"]) != set(unified["test"]["id"])


def test_rewrite_query_respells_words_against_the_exact_product() -> None:
    assert rewrite_query("blak  Charegr", "Voltix Black Charger, Large", 0.75) == "black charger"
    assert rewrite_query("red kettle", "Voltix Black Charger", 0.75) == "red kettle"


def test_user_profile_leaves_out_what_the_source_lacks() -> None:
    movies = [ItemInfo("A (1990)", "Movies", ("Drama", "War")), ItemInfo("B", "Movies", ("Drama",))]
    profile = user_profile(movies, [4.0, 5.0])
    assert profile == "Interested mostly in Drama and War; average rating 4.5 of 5."


# --- bad input ------------------------------------------------------------------------------


def test_duplicate_records_are_an_error_naming_task_split_and_row(raw_copy: Path) -> None:
    path = raw_copy / "amazonqa" / "train-qar.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line + line for line in lines))  # every question twice
    with pytest.raises(BuildError, match="duplicate id") as info:
        build_unified(raw_copy, BUILD)
    assert info.value.task in ("AP", "AG") and info.value.row is not None
    assert f"{info.value.task}/{info.value.split} row {info.value.row}" in str(info.value)


def test_a_task_without_its_source_is_skipped_unless_asked_for(raw_copy: Path) -> None:
    shutil.rmtree(raw_copy / "amazon_google")
    assert "PM" not in set(build_unified(raw_copy, BUILD)["train"]["task"])
    with pytest.raises(RecFoundError, match="PM, which needs amazon_google"):
        build_unified(raw_copy, BUILD.model_copy(update={"tasks": ("PM", "SA")}))


def test_a_pair_in_both_train_and_test_files_is_an_error(raw_copy: Path) -> None:
    google = raw_copy / "amazon_google"
    shutil.copyfile(google / "test.csv", google / "train.csv")
    with pytest.raises(BuildError, match="also the target of test row") as info:
        build_unified(raw_copy, BUILD)
    assert (info.value.task, info.value.split) == ("PM", "train")


def test_a_pair_naming_an_unknown_product_is_a_data_error(raw_copy: Path) -> None:
    test_csv = raw_copy / "amazon_google" / "test.csv"
    test_csv.write_text(test_csv.read_text() + "999999,0,1\n")
    lines = len(test_csv.read_text().splitlines())
    with pytest.raises(DataError, match="not an id of tableA.csv") as info:
        build_unified(raw_copy, BUILD)
    assert info.value.path == test_csv and info.value.line == lines


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_failed_build_leaves_the_previous_output_untouched(
    raw_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "artifacts" / "unified"
    cfg = Config(paths=Paths(data=raw_copy, unified=out), build=BUILD)
    run(cfg)
    printed = capsys.readouterr().out
    assert str(out) in printed and "PM" in printed
    before = tree_hashes(out)
    assert datasets.load_from_disk(str(out))["test"].num_rows == 6 * len(TASKS)
    google = raw_copy / "amazon_google"
    shutil.copyfile(google / "test.csv", google / "train.csv")
    with pytest.raises(BuildError):
        run(cfg)
    assert tree_hashes(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["unified"]  # no temp dirs left


# --- bad input that still passed: long lines, copies, re-encoded files, two releases ---------

ML100K = Path("movielens/ml-100k")


def ingest_files(out: Path) -> dict[str, dict]:
    """File path (relative to the data folder's parent) -> its counts in build.json."""
    manifest = json.loads((out / "build.json").read_text(encoding="utf-8"))
    return {f["file"]: f for f in manifest["ingest"]["files"]}


def test_a_line_over_build_max_line_bytes_fails_the_build_naming_file_line_and_length(
    raw_copy: Path,
) -> None:
    path = raw_copy / "amazonqa" / "train-qar.jsonl"
    lines = path.read_text(encoding="utf-8").count("\n")
    with path.open("a", encoding="utf-8") as handle:
        handle.write("x" * 5000)  # a corrupt tail without a line break
    with pytest.raises(LineTooLongError) as info:
        build_unified(raw_copy, BUILD.model_copy(update={"max_line_bytes": 4096}))
    assert (info.value.path, info.value.line) == (path, lines + 1)
    assert "5,000 bytes long, longer than 4,096 bytes (build.max_line_bytes)" in str(info.value)


@pytest.mark.parametrize(
    ("copied", "named"),
    [("movielens/ml-100k", "ml-100k-copy"), ("amazonqa/train-qar.jsonl", "train-qar-copy.jsonl")],
)
def test_a_source_file_present_twice_is_refused_in_one_line_naming_both(
    raw_copy: Path, copied: str, named: str
) -> None:
    original = raw_copy / copied
    copy = original.with_name(named)
    if original.is_dir():
        shutil.copytree(original, copy)
        original, copy = original / "u.data", copy / "u.data"  # the first file of the set
    else:
        shutil.copyfile(original, copy)
    with pytest.raises(DataError) as info:
        build_unified(raw_copy, BUILD)
    message = str(info.value)
    assert {info.value.path, Path(message.split("the same bytes as ")[1].split(" (")[0])} == {
        original,
        copy,
    }
    assert "(sha256 " in message and "keep one copy" in message and "\n" not in message


def test_a_latin1_movielens_file_reencoded_as_utf8_is_read_as_utf8_and_noted(
    raw_copy: Path, tmp_path: Path
) -> None:
    item = raw_copy / ML100K / "u.item"
    latin1 = item.read_text(encoding="iso-8859-1")
    item.write_text(latin1, encoding="utf-8")  # as redistributed copies often are
    accented = sum(not line.isascii() for line in latin1.splitlines())
    assert accented  # the sample has accented titles
    out = tmp_path / "unified"
    write_unified(raw_copy, BUILD, out)
    assert ingest_files(out)[str(item)]["notes"][NOTE_READ_AS_UTF8] == accented
    catalogue = read_catalogue(out).to_pylist()
    movies = {row["title"] for row in catalogue if row["source"] == "movielens"}
    wanted = {movie.title[: BUILD.title_chars] for movie in read_movies(item)}
    assert movies == wanted and not any("Ã" in title for title in movies)


def test_two_movielens_releases_are_said_to_be_kept_apart_with_repeated_titles_counted(
    raw_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = raw_copy / ML100K, raw_copy / "movielens" / "ml-100k-rerelease"
    shutil.copytree(first, second)  # a later release: one rating fewer, a movie and a user more
    ratings = (second / "u.data").read_text().splitlines(keepends=True)
    (second / "u.data").write_text("".join(ratings[:-1]))
    with (second / "u.item").open("a", encoding="iso-8859-1") as handle:
        handle.write("|".join(["9999", "New Film (2001)", "", "", "", *(["0"] * 18), "1"]) + "\n")
    with (second / "u.user").open("a", encoding="iso-8859-1") as handle:
        handle.write("9999|30|F|writer|12345\n")
    titles = [same_title_key(m.title) for m in read_movies(first / "u.item")]
    repeats_in_first = len(titles) - len(set(titles))
    out = tmp_path / "unified"
    run(Config(paths=Paths(data=raw_copy, unified=out), build=BUILD))
    printed = " ".join(capsys.readouterr().out.split())
    ingest = json.loads((out / "build.json").read_text(encoding="utf-8"))["ingest"]
    assert ingest["kept_apart"] == {"movielens": ["ml-100k", "ml-100k-rerelease"]}
    said = "movielens: releases ml-100k and ml-100k-rerelease are kept apart (separate id spaces"
    assert said in printed and said in ingest["remarks"][0]
    files = ingest_files(out)
    assert files[str(second / "u.item")]["notes"] == {REPEATED_TITLE: len(titles)}
    assert files[str(first / "u.item")]["notes"].get(REPEATED_TITLE, 0) == repeats_in_first
    repeated = f"movielens: {len(titles) + repeats_in_first:,} catalogue titles (title and year)"
    assert repeated in printed and repeated in ingest["remarks"][1]


def test_one_release_alone_is_not_said_to_be_kept_apart(raw_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "unified"
    write_unified(raw_dir, BUILD, out)
    ingest = json.loads((out / "build.json").read_text(encoding="utf-8"))["ingest"]
    assert ingest["kept_apart"] == {}
    assert not any("kept apart" in remark for remark in ingest["remarks"])
