"""Sampling and tokenised batches from the unified dataset (recfound.train.batches)."""

from __future__ import annotations

from collections import Counter

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer

from recfound.config import TrainConfig
from recfound.data.schema import FEATURES
from recfound.errors import DataError
from recfound.model.prompts import IGNORE_INDEX
from recfound.tasks import EMBEDDING_TASK_IDS, GENERATIVE_TASK_IDS, NUM_TASKS
from recfound.train.batches import (
    BatchEncoder,
    EpochSampler,
    length_groups,
    rows_by_task,
    split_step,
    validation_rows,
)
from recfound.train.smoke import synthetic_unified

U2I, Q2I, I2I = EMBEDDING_TASK_IDS
QR, SR = GENERATIVE_TASK_IDS[:2]


@pytest.fixture(scope="module")
def unified() -> datasets.DatasetDict:
    return synthetic_unified(train_per_task=6, validation_per_task=3, test_per_task=1, seed=3)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_rows_by_task_lists_each_tasks_rows(unified):
    rows = rows_by_task(unified["train"])
    assert set(rows) == set(range(NUM_TASKS))
    for task, indices in rows.items():
        assert len(indices) == 6
        assert set(unified["train"].select(indices)["task_id"]) == {task}


def test_an_epoch_draws_every_row_of_a_task_exactly_once(unified):
    sampler = EpochSampler(rows_by_task(unified["train"]), seed=7)
    drawn = []
    for _ in range(3):
        drawn += sampler.draw({U2I: 2})[U2I]
    assert sorted(drawn) == sorted(rows_by_task(unified["train"])[U2I].tolist())
    assert sampler.unseen()[U2I] == 0


def test_draws_are_seeded_and_identical_for_every_copy(unified):
    a = EpochSampler(rows_by_task(unified["train"]), seed=7)
    b = EpochSampler(rows_by_task(unified["train"]), seed=7)
    c = EpochSampler(rows_by_task(unified["train"]), seed=8)
    counts = {U2I: 2, Q2I: 1, QR: 3}
    draws_a = [a.draw(counts) for _ in range(4)]
    assert draws_a == [b.draw(counts) for _ in range(4)]
    assert draws_a != [c.draw(counts) for _ in range(4)]


def test_asking_beyond_the_unseen_rows_starts_a_new_epoch_for_the_whole_group(unified):
    sampler = EpochSampler(rows_by_task(unified["train"]), seed=1)
    sampler.draw({U2I: 6, Q2I: 2})
    drawn = sampler.draw({U2I: 2})  # U2I has nothing unseen left
    assert len(drawn[U2I]) == 2
    assert sampler.epoch == [1, 0]  # embedding group moved on, generative did not
    assert sampler.unseen()[U2I] == 4 and sampler.unseen()[Q2I] == 6


def test_sampler_state_round_trips(unified):
    sampler = EpochSampler(rows_by_task(unified["train"]), seed=1)
    for _ in range(5):
        sampler.draw({U2I: 2, SR: 3})
    restored = EpochSampler(rows_by_task(unified["train"]), seed=1)
    restored.load_state_dict(sampler.state_dict())
    assert restored.draw({U2I: 2, SR: 3}) == sampler.draw({U2I: 2, SR: 3})


def test_split_step_gives_every_chunk_its_slots_and_disjoint_rows():
    drawn = {U2I: [0, 1, 2], Q2I: [3], QR: [10, 11, 12, 13], SR: [14, 15, 16, 17]}
    chunks = split_step(drawn, slots=(2, 4), chunks=2)
    assert [len(c[0]) for c in chunks] == [2, 2]
    assert [len(c[1]) for c in chunks] == [4, 4]
    flat = [r for c in chunks for g in c for r in g]
    assert len(flat) == len(set(flat)) == 12


def test_split_step_drops_rows_that_cannot_be_shared_evenly():
    chunks = split_step({U2I: [0, 1, 2]}, slots=(2, 0), chunks=2)
    assert [len(c[0]) for c in chunks] == [1, 1]


def test_validation_rows_are_a_fixed_subset_per_task(unified):
    first = validation_rows(unified["validation"], 2, seed=5)
    again = validation_rows(unified["validation"], 2, seed=5)
    assert {t: r.tolist() for t, r in first.items()} == {t: r.tolist() for t, r in again.items()}
    assert all(len(r) == 2 for r in first.values())


def test_embedding_batch_holds_query_positive_and_hard_negatives(unified, tokenizer):
    cfg = TrainConfig(group_size=3)
    encoder = BatchEncoder(unified["train"], tokenizer, cfg, "unified/train")
    rows = rows_by_task(unified["train"])
    indices = [int(rows[U2I][0]), int(rows[I2I][1])]
    batch = encoder.embedding(indices)
    assert batch["queries"]["input_ids"].shape[0] == 2
    assert batch["passages"]["input_ids"].shape[0] == 6
    assert batch["query_task_ids"].tolist() == [U2I, I2I]
    assert batch["passage_task_ids"].tolist() == [U2I] * 3 + [I2I] * 3
    # the instruction is part of the query but not of its pooled tokens
    q = batch["queries"]
    assert (q["pool_mask"].sum(1) < q["attention_mask"].sum(1)).all()
    p = batch["passages"]
    assert (p["pool_mask"].sum(1) == p["attention_mask"].sum(1)).all()  # passages: no instruction
    positive = unified["train"][indices[0]]["positives"][0]
    first_passage = p["input_ids"][0][p["attention_mask"][0].bool()].tolist()
    assert tokenizer.decode(first_passage) == positive


def test_generative_rows_of_every_task_share_one_batch_with_the_prompt_masked(unified, tokenizer):
    # max_padding_share 1: every row in one batch, however ragged
    cfg = TrainConfig(max_padding_share=1.0)
    encoder = BatchEncoder(unified["train"], tokenizer, cfg, "unified/train")
    rows = rows_by_task(unified["train"])
    indices = [int(rows[SR][0]), int(rows[QR][0]), int(rows[SR][1])]
    (batch,) = encoder.generative(indices)
    assert batch["task_ids"].tolist() == [SR, QR, SR]  # per sample, in row order
    labels, attention = batch["labels"], batch["attention_mask"]
    assert len({int(n) for n in attention.sum(1)}) > 1  # mixed lengths, padded to the longest
    assert (labels[:, 0] == IGNORE_INDEX).all()  # prompt start is never a target
    assert (labels != IGNORE_INDEX).any(dim=1).all()  # every row has response tokens
    assert (labels[attention == 0] == IGNORE_INDEX).all()
    assert (batch["input_ids"][attention == 0] == tokenizer.pad_token_id).all()
    for i, index in enumerate(indices):  # each row is its own example, right-padded
        (alone,) = encoder.generative([index])
        n = int(attention[i].sum())
        assert attention[i, :n].all() and not attention[i, n:].any()
        assert batch["input_ids"][i, :n].tolist() == alone["input_ids"][0].tolist()
        assert batch["labels"][i, :n].tolist() == alone["labels"][0].tolist()
    assert encoder.generative([]) == []


def test_generative_rows_are_grouped_by_length_within_the_padding_share(unified, tokenizer):
    rows = [int(i) for indices in rows_by_task(unified["train"]).values() for i in indices[:2]]
    rows = [r for r in rows if unified["train"][r]["kind"] == "generative"]
    for share in (0.0, 0.25, 1.0):
        cfg = TrainConfig(max_padding_share=share)
        batches = BatchEncoder(unified["train"], tokenizer, cfg, "unified/train").generative(rows)
        assert sum(len(b["task_ids"]) for b in batches) == len(rows)  # every row, once
        for batch in batches:
            real = batch["attention_mask"].sum()
            assert 1 - real / batch["attention_mask"].numel() <= share + 1e-9
    assert len(batches) == 1  # share 1: one batch


def test_length_groups_cut_where_padding_would_exceed_the_share():
    assert length_groups([400, 100, 90, 390], 0.25) == [[0, 3], [1, 2]]
    assert length_groups([400, 100, 90, 390], 1.0) == [[0, 1, 2, 3]]
    assert length_groups([5, 5, 3], 0.0) == [[0, 1], [2]]
    assert length_groups([], 0.25) == []


# --- positives and hard negatives per draw

POSITIVES = ["red cotton shirt", "blue running shoes", "green trail jacket"]
NEGATIVES = ["black hat", "white socks", "grey scarf", "brown belt"]


@pytest.fixture(scope="module")
def several_passages(unified) -> datasets.Dataset:
    """Two U2I rows, each with several positives and hard negatives to choose from."""
    rows = unified["train"].filter(lambda r: r["task_id"] == U2I).to_list()[:2]
    for row in rows:
        row["positives"], row["negatives"] = POSITIVES, NEGATIVES
        row["positive_ids"] = [f"p{i}" for i in range(len(POSITIVES))]
        row["negative_ids"] = [f"n{i}" for i in range(len(NEGATIVES))]
    return datasets.Dataset.from_list(rows, features=FEATURES)


def drawn_passages(encoder: BatchEncoder, tokenizer, row: int, draw: int | None) -> list[str]:
    """The group_size passage texts the encoder gives row `row` at draw `draw`."""
    p = encoder.embedding([row], draw=draw)["passages"]
    return [
        tokenizer.decode(ids[mask.bool()].tolist())
        for ids, mask in zip(p["input_ids"], p["attention_mask"], strict=True)
    ]


def test_validation_draw_always_gives_the_first_positive_and_negatives(several_passages, tokenizer):
    encoder = BatchEncoder(several_passages, tokenizer, TrainConfig(group_size=3), "u", seed=1)
    first = [POSITIVES[0], *NEGATIVES[:2]]
    assert drawn_passages(encoder, tokenizer, 0, None) == first
    assert encoder.micro_batch([0], [])["embedding"]["passages"]["input_ids"].equal(
        encoder.embedding([0])["passages"]["input_ids"]
    )


def test_each_step_draws_a_random_positive_and_distinct_hard_negatives(several_passages, tokenizer):
    encoder = BatchEncoder(several_passages, tokenizer, TrainConfig(group_size=3), "u", seed=1)
    draws = [drawn_passages(encoder, tokenizer, 0, step) for step in range(12)]
    for positive, *negatives in draws:
        assert positive in POSITIVES
        assert len(set(negatives)) == 2 and set(negatives) <= set(NEGATIVES)
    assert len({tuple(d) for d in draws}) > 1  # different steps, different passages
    # the two rows of one step draw independently (the row index is part of the key)
    assert [drawn_passages(encoder, tokenizer, 1, s) for s in range(12)] != draws


def test_the_same_seed_and_step_draw_the_same_passages_on_any_copy(several_passages, tokenizer):
    cfg = TrainConfig(group_size=3)
    a = BatchEncoder(several_passages, tokenizer, cfg, "u", seed=7)
    resumed = BatchEncoder(several_passages, tokenizer, cfg, "u", seed=7)
    other_seed = BatchEncoder(several_passages, tokenizer, cfg, "u", seed=8)
    steps = [5, 0, 3, 5]  # any order: a draw depends on nothing drawn before it
    draws = [drawn_passages(a, tokenizer, 0, s) for s in steps]
    assert draws[0] == draws[3]
    assert [drawn_passages(resumed, tokenizer, 0, s) for s in reversed(steps)] == draws[::-1]
    assert [drawn_passages(other_seed, tokenizer, 0, s) for s in steps] != draws


def test_every_stored_positive_and_negative_is_eventually_drawn(several_passages, tokenizer):
    encoder = BatchEncoder(several_passages, tokenizer, TrainConfig(group_size=2), "u", seed=3)
    seen_positives, seen_negatives = set(), set()
    for step in range(40):
        positive, negative = drawn_passages(encoder, tokenizer, 0, step)
        seen_positives.add(positive)
        seen_negatives.add(negative)
    assert seen_positives == set(POSITIVES)
    assert seen_negatives == set(NEGATIVES)


def test_too_few_negatives_is_a_data_error_naming_the_row(tokenizer):
    row = synthetic_unified(1, 1, 1)["train"].filter(lambda r: r["task_id"] == U2I).to_list()[0]
    row["negatives"] = []
    split = datasets.Dataset.from_list([row], features=FEATURES)
    encoder = BatchEncoder(split, tokenizer, TrainConfig(group_size=2), "unified/train")
    with pytest.raises(DataError, match=row["id"]) as err:
        encoder.embedding([0])
    assert "unified/train" in str(err.value)


def test_passages_without_their_item_ids_are_a_data_error_naming_the_row(tokenizer):
    row = synthetic_unified(1, 1, 1)["train"].filter(lambda r: r["task_id"] == U2I).to_list()[0]
    row["negative_ids"] = row["negative_ids"][:-1]
    split = datasets.Dataset.from_list([row], features=FEATURES)
    encoder = BatchEncoder(split, tokenizer, TrainConfig(group_size=2), "unified/train")
    with pytest.raises(DataError, match="negative_ids") as err:
        encoder.embedding([0])
    assert row["id"] in str(err.value) and "unified/train" in str(err.value)


def test_row_ids_name_the_trained_rows(unified, tokenizer):
    encoder = BatchEncoder(unified["train"], tokenizer, TrainConfig(), "unified/train")
    assert encoder.row_ids([0, 5]) == [unified["train"][0]["id"], unified["train"][5]["id"]]


def test_drawn_task_mix_follows_the_counts(unified):
    sampler = EpochSampler(rows_by_task(unified["train"]), seed=2)
    drawn = sampler.draw({U2I: 2, Q2I: 1, QR: 3})
    task_of = np.asarray(unified["train"]["task_id"])
    mix = Counter(int(task_of[i]) for rows in drawn.values() for i in rows)
    assert mix == {U2I: 2, Q2I: 1, QR: 3}


# --- task subsets


def test_rows_by_task_keys_are_the_tasks_asked_for_or_those_present(unified):
    subset = synthetic_unified(train_per_task=3, tasks=["SR", "U2I"])
    assert list(rows_by_task(subset["train"])) == [U2I, SR]
    asked = rows_by_task(subset["train"], [U2I, QR])
    assert list(asked) == [U2I, QR] and asked[QR].size == 0


@pytest.mark.parametrize("codes", [("QR", "SR"), ("U2I", "I2I")], ids=["generative", "embedding"])
def test_a_one_kind_task_set_fills_only_its_own_pool(codes):
    subset = synthetic_unified(train_per_task=6, tasks=codes)
    sampler = EpochSampler(rows_by_task(subset["train"]), seed=4)
    present = list(rows_by_task(subset["train"]))
    drawn = sampler.draw({t: 3 for t in present})
    chunks = split_step(drawn, slots=(2, 4), chunks=1)
    (emb_rows, gen_rows) = chunks[0]
    embedding = all(t in EMBEDDING_TASK_IDS for t in present)
    assert (len(emb_rows), len(gen_rows)) == ((2, 0) if embedding else (0, 4))
    task_of = np.asarray(subset["train"]["task_id"])
    assert {int(task_of[i]) for i in emb_rows + gen_rows} <= set(present)


def test_synthetic_rows_take_their_sources_in_turn():
    split = synthetic_unified(train_per_task=4, tasks=["PM"], sources=("a", "b"))["train"]
    assert split["source"] == ["a", "b", "a", "b"]
    assert set(split["task"]) == {"PM"}
