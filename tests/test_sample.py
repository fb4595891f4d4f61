"""The seeded raw sample: byte-identical per seed, public formats, learnable structure."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from recfound.config import SampleConfig
from recfound.data.latent import CATEGORY_SPECS, make_world, user_purchases
from recfound.data.readers import (
    discover_sources,
    read_amazonqa,
    read_esci,
    read_item_meta,
    read_match_pairs,
    read_match_products,
    read_movie_users,
    read_movies,
    read_ratings,
    read_reviews,
)
from recfound.data.sample import write_reviews, write_sample

SMALL = SampleConfig(
    n_users=60,
    n_items=120,
    n_queries=80,
    n_questions=80,
    n_match_pairs=60,
    n_movies=40,
    n_movie_users=15,
)


def file_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample(tmp_path_factory.mktemp("sample") / "data", SMALL)


def test_same_seed_writes_byte_identical_files(sample_dir: Path, tmp_path: Path) -> None:
    again = write_sample(tmp_path / "again", SMALL)
    assert file_hashes(again) == file_hashes(sample_dir)


def test_a_different_seed_writes_different_data(sample_dir: Path, tmp_path: Path) -> None:
    other = file_hashes(write_sample(tmp_path / "other", SMALL.model_copy(update={"seed": 7})))
    same = file_hashes(sample_dir)
    assert other.keys() == same.keys()
    changed = [name for name in same if other[name] != same[name]]
    # u.genre is a fixed list; every generated file changes with the seed.
    assert sorted(set(same) - set(changed)) == ["movielens/ml-100k/u.genre"]


def test_sample_has_the_documented_layout(sample_dir: Path) -> None:
    expected = {
        *(f"amazon_reviews/{c}.jsonl.gz" for c in SMALL.categories),
        *(f"amazon_reviews/meta_{c}.jsonl.gz" for c in SMALL.categories),
        "esci/shopping_queries_dataset_examples.parquet",
        "esci/shopping_queries_dataset_products.parquet",
        "amazonqa/train-qar.jsonl",
        *(f"movielens/ml-100k/{n}" for n in ("u.data", "u.item", "u.user", "u.genre")),
        *(f"amazon_google/{n}" for n in ("tableA.csv", "tableB.csv")),
        *(f"amazon_google/{n}" for n in ("train.csv", "valid.csv", "test.csv")),
        ".recfound-sample.json",  # the manifest that marks it as the bundled sample
    }
    assert set(file_hashes(sample_dir)) == expected


def test_gzip_headers_carry_no_clock_time_and_a_fixed_name(sample_dir: Path) -> None:
    for path in (sample_dir / "amazon_reviews").iterdir():
        data = path.read_bytes()
        assert data[4:8] == b"\0\0\0\0", f"{path.name}: gzip mtime is set"
        name_end = data.index(b"\0", 10)
        assert data[10:name_end].decode() == path.name.removesuffix(".gz")


def test_every_source_reads_back_through_the_readers(sample_dir: Path) -> None:
    sources = discover_sources(sample_dir)
    assert sources.present == ("amazon_reviews", "esci", "amazonqa", "movielens", "amazon_google")
    items = [m for c in sources.amazon_reviews for m in read_item_meta(c.meta)]
    assert len(items) == SMALL.n_items
    assert len({m.parent_asin for m in items}) == SMALL.n_items
    reviews = [r for c in sources.amazon_reviews for r in read_reviews(c.reviews)]
    users = {r.user_id for r in reviews}
    assert len(users) == SMALL.n_users
    assert {r.parent_asin for r in reviews} <= {m.parent_asin for m in items}
    assert all(
        SMALL.min_sequence <= n <= SMALL.max_sequence
        for n in Counter(r.user_id for r in reviews).values()
    )
    examples = list(read_esci(sources.esci[0].examples, sources.esci[0].products))
    assert len({e.query_id for e in examples}) == SMALL.n_queries
    assert {e.esci_label for e in examples} == {"E", "S", "C", "I"}
    assert {e.split for e in examples} == {"train", "test"}
    questions = list(read_amazonqa(sources.amazonqa[0]))
    assert len(questions) == SMALL.n_questions
    assert {q.is_answerable for q in questions} == {True, False}
    (movielens,) = sources.movielens
    ratings = list(read_ratings(movielens.ratings))
    assert len({(r.user_id, r.item_id) for r in ratings}) == len(ratings)  # one rating per pair
    assert len(list(read_movies(movielens.movies))) == SMALL.n_movies
    assert len(list(read_movie_users(movielens.users))) == SMALL.n_movie_users
    (google,) = sources.amazon_google
    left = {p.id for p in read_match_products(google.table_a)}
    right = {p.id for p in read_match_products(google.table_b)}
    pairs = [p for f in (google.train, google.valid, google.test) for p in read_match_pairs(f)]
    assert len(pairs) == SMALL.n_match_pairs
    assert {p.label for p in pairs} == {0, 1}
    assert all(p.ltable_id in left and p.rtable_id in right for p in pairs)


def test_movie_titles_are_latin1_encoded(sample_dir: Path) -> None:
    raw = (sample_dir / "movielens/ml-100k/u.item").read_bytes()
    titles = [m.title for m in read_movies(sample_dir / "movielens/ml-100k/u.item")]
    assert any(not t.isascii() for t in titles), "the sample should exercise non-ASCII titles"
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")


def test_ratings_follow_how_well_the_item_fits_the_user() -> None:
    world = make_world(SMALL)
    fits, misfits = [], []
    for user in world.users:
        for purchase in user_purchases(world, user):
            fit = purchase.item.brand in user.brands and purchase.item.tier == user.tier
            (fits if fit else misfits).append(purchase.rating)
    assert sum(fits) / len(fits) > sum(misfits) / len(misfits) + 1.0


def test_the_next_purchase_is_mostly_the_complement_of_the_previous_one() -> None:
    world = make_world(SMALL)
    follows = total = 0
    for user in world.users:
        previous = {}
        for purchase in user_purchases(world, user):
            item = purchase.item
            if item.category in previous:
                n_types = len(CATEGORY_SPECS[item.category].types)
                follows += item.type_index == (previous[item.category] + 1) % n_types
                total += 1
            previous[item.category] = item.type_index
    chance = 1 / len(next(iter(CATEGORY_SPECS.values())).types)
    assert follows / total > 3 * chance


def test_review_text_carries_the_sentiment(sample_dir: Path) -> None:
    reviews = [
        r
        for path in sorted((sample_dir / "amazon_reviews").glob("[!m]*.jsonl.gz"))
        for r in read_reviews(path)
    ]
    negative = [r.text for r in reviews if r.rating <= 2]
    positive = [r.text for r in reviews if r.rating >= 4]
    assert negative and positive
    assert not set(negative) & set(positive)
    assert all("five stars" not in t.lower() for t in negative)


def test_write_reviews_streams_up_to_the_requested_count(tmp_path: Path) -> None:
    world = make_world(SMALL)
    counts = write_reviews(tmp_path, world, n_reviews=50)
    assert sum(counts.values()) == 50
    for category, count in counts.items():
        path = tmp_path / f"{category}.jsonl.gz"
        lines = gzip.decompress(path.read_bytes()).decode().splitlines()
        assert len(lines) == count
        assert all(json.loads(line)["parent_asin"] for line in lines)


def test_write_sample_replaces_the_directory_whole(tmp_path: Path) -> None:
    target = tmp_path / "data"
    (target / "stale").mkdir(parents=True)
    (target / "stale" / "old.txt").write_text("left over")
    write_sample(target, SMALL)
    assert not (target / "stale").exists()
    assert (target / "amazonqa" / "train-qar.jsonl").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["data"]  # no temp dirs left behind


def test_unknown_category_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown"):
        make_world(SMALL.model_copy(update={"categories": ("Books",)}))
