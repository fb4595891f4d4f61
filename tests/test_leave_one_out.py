"""The field's protocol: the leave-one-out split, HR/NDCG, seen-item exclusion, ID baselines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recfound.config import SASRecConfig
from recfound.data.catalogue import CATALOGUE_FILE, CATALOGUE_SCHEMA, write_sequences
from recfound.data.tasks.interactions import InteractionLog
from recfound.evaluate.id_baselines import EASE, Popularity
from recfound.evaluate.leave_one_out import (
    LeaveOneOut,
    UserSplit,
    rank_id_model,
    ranking_stats,
    source_result,
    top_k,
)
from recfound.evaluate.sasrec import SASRec, training_windows
from recfound.outputs import SEQUENCES_FILE

SOURCE = "movielens"


def write_build(unified: Path, events: list[tuple[str, str, int]], items: list[str]) -> None:
    """What the build leaves for the protocol: the sequences table (min_interactions 4) of
    `events` (user, item, time) and a catalogue of `items`."""
    unified.mkdir(parents=True, exist_ok=True)
    log = InteractionLog()
    file = log.file(SOURCE, Path("ratings.csv"))
    for user, item, time in events:
        log.add(user, item, time, 4.0, SOURCE, file)
    write_sequences(log.sequences(), 4, unified / SEQUENCES_FILE)
    catalogue = [
        {"item_id": i, "passage": i, "title": f"title {i}", "category": "c", "source": SOURCE}
        for i in sorted(items)
    ]
    pq.write_table(pa.Table.from_pylist(catalogue, CATALOGUE_SCHEMA), unified / CATALOGUE_FILE)


def test_split_holds_out_the_last_two_and_orders_ties_by_item_id(tmp_path: Path) -> None:
    events = [
        ("u1", "m:1", 10),
        ("u1", "m:2", 20),
        ("u1", "m:3", 30),
        ("u1", "m:9", 40),  # rated in the same second as m:10: string order puts m:10 first
        ("u1", "m:10", 40),
        ("short", "m:1", 1),  # three interactions: under min_interactions, left out
        ("short", "m:2", 2),
        ("short", "m:3", 3),
    ]
    write_build(tmp_path, events, ["m:1", "m:2", "m:3", "m:9", "m:10"])
    data = LeaveOneOut.read(tmp_path)
    assert [u.user_id for u in data.users] == ["u1"]
    user = data.users[0]
    assert user.items == ("m:1", "m:2", "m:3", "m:10", "m:9")
    assert user.target("test") == "m:9"
    assert user.target("validation") == "m:10"
    assert user.training_part == ("m:1", "m:2", "m:3")
    assert user.history("test") == ("m:1", "m:2", "m:3", "m:10")


def test_seen_items_are_the_history_but_a_repeated_target_stays_findable() -> None:
    user = UserSplit(SOURCE, "u", ("a", "b", "a", "c", "a"))
    assert user.seen("test") == {"b", "c"}
    assert user.seen("validation") == {"a", "b"}


def test_hr_and_ndcg_follow_the_targets_rank() -> None:
    ranked = [["t", "x", "y"], ["x", "y", "t"], ["x", "y", "z"]]
    stats = ranking_stats(ranked, ["t", "t", "t"], [1, 3])
    assert stats["HR@1"].table[:, 0].tolist() == [1.0, 0.0, 0.0]
    assert stats["HR@3"].table[:, 0].tolist() == [1.0, 1.0, 0.0]
    assert stats["NDCG@3"].table[:, 0].tolist() == pytest.approx([1.0, 1 / math.log2(4), 0.0])
    result = source_result(
        SOURCE, [UserSplit(SOURCE, f"u{i}", ("t",) * 3) for i in range(3)], ranked, [1, 3]
    )
    assert result.metrics["HR@3"] == pytest.approx(2 / 3)
    assert result.primary == "NDCG@1" and result.n == 3 and result.evidence is not None


def test_top_k_skips_excluded_items_and_breaks_ties_in_the_given_order() -> None:
    scores = np.array([5.0, 9.0, 1.0, 1.0, 1.0])
    ties = np.array([0, 1, 4, 2, 3])  # among equal scores: item 3, then 4, then 2
    assert top_k(scores, [1], 3, ties) == [0, 3, 4]
    assert top_k(scores, [0, 1, 2, 3, 4], 3, ties) == []


def test_popularity_ranks_the_most_frequent_unseen_items_first(tmp_path: Path) -> None:
    # Training parts: u1 hit a b, u2 hit pop c, u3 hit pop d: counts hit 3, pop 2, the rest 1.
    events = []
    for t, item in enumerate(["hit", "a", "b", "v1", "pop"]):
        events.append(("u1", item, t))
    for t, item in enumerate(["hit", "pop", "c", "v2", "hit"]):
        events.append(("u2", item, t))
    for t, item in enumerate(["hit", "pop", "d", "v3", "e"]):
        events.append(("u3", item, t))
    items = ["hit", "pop", "a", "b", "c", "d", "e", "v1", "v2", "v3"]
    write_build(tmp_path, events, items)
    data = LeaveOneOut.read(tmp_path)
    ranked = dict(
        zip(
            [u.user_id for u in data.users],
            rank_id_model(Popularity(), data, SOURCE, 2, seed=0),
            strict=True,
        )
    )
    assert ranked["u1"][0] == "pop"  # "hit" (3 counts) is seen by u1: excluded
    assert ranked["u2"][0] == "hit"  # u2's repeat of "hit" stays findable
    assert set(ranked["u3"]) <= {"a", "b", "c"}  # hit, pop and d are u3's: excluded


def test_ease_recommends_what_co_occurs_with_the_history() -> None:
    # a and b always together, c and d always together
    train = [[0, 1], [0, 1], [2, 3], [2, 3], [0, 1, 4]]
    model = EASE(lamb=0.5, seed=0).fit(train, n_items=6)
    scores = model.scores([[0], [2]])
    assert int(np.argmax(scores[0])) == 1
    assert int(np.argmax(scores[1])) == 3
    assert scores[0, 5] < scores[0].max()  # item 5 never trained: lowest


def test_training_windows_make_every_item_but_the_first_a_target_once() -> None:
    windows = training_windows([list(range(7))], max_len=3)
    targets = sorted(i - 1 for w in windows for i in w[1:])
    assert targets == list(range(1, 7))
    assert all(len(w) <= 4 for w in windows)


def test_sasrec_learns_a_deterministic_next_item_rule() -> None:
    # next item = current + 1 (mod 12), from random starting points
    rng = np.random.default_rng(0)
    n_items = 12
    train = [[(s + t) % n_items for t in range(8)] for s in rng.integers(0, n_items, 60)]
    cfg = SASRecConfig(
        dim=32,
        layers=1,
        heads=1,
        max_len=6,
        epochs=40,
        batch_size=32,
        dropout=0.0,
        learning_rate=0.01,
    )
    model = SASRec(cfg, seed=0)
    losses = model.fit(train, n_items)
    assert losses[-1] < losses[0] / 4
    histories = [[(s + t) % n_items for t in range(5)] for s in range(n_items)]
    predicted = model.scores(histories).argmax(axis=1)
    assert predicted.tolist() == [(s + 5) % n_items for s in range(n_items)]
