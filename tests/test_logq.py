"""The logQ correction (recfound.train.logq, `train.logq_correction`): each passage's logit less
the log of how often training draws it, so popular items stop being everyone's negative."""

from __future__ import annotations

import math

import pytest
import torch

from recfound.model.losses import info_nce
from recfound.train.logq import PassageLogQ, passage_draw_counts


def embedding_row(positives: list[str], negatives: list[str]) -> dict:
    return {"kind": "embedding", "positive_ids": positives, "negative_ids": negatives}


def test_draw_counts_follow_how_training_draws_one_positive_and_group_size_minus_one_negatives():
    rows = [
        embedding_row(["a"], ["b", "c", "d"]),
        embedding_row(["a", "b"], ["c"]),
        {"kind": "generative", "positive_ids": [], "negative_ids": []},
    ]
    counts = passage_draw_counts(rows, group_size=2)
    # a: 1 + 1/2; b: 1/3 (negative of row 1) + 1/2 (positive of row 2); c: 1/3 + 1; d: 1/3
    assert counts == pytest.approx({"a": 1.5, "b": 5 / 6, "c": 4 / 3, "d": 1 / 3})
    assert passage_draw_counts(rows, group_size=1) == pytest.approx({"a": 1.5, "b": 0.5})


def test_log_q_is_a_smoothed_distribution_and_unseen_items_are_as_rare_as_one_pseudo_count():
    log_q = PassageLogQ({"popular": 9.0, "rare": 0.0})
    q = log_q.of(["popular", "rare", "never seen"]).exp()
    assert q.tolist() == pytest.approx([10 / 11, 1 / 11, 1 / 11])
    assert float(q[:2].sum()) == pytest.approx(1.0)


def reference_corrected(queries, passages, log_q, group_size, temperature) -> float:
    """−mean_j log softmax_p(q_j·p/τ − log Q_p)[positive of j], written out."""
    total = 0.0
    for j, q in enumerate(queries):
        logits = [
            float(q @ p) / temperature - float(lq) for p, lq in zip(passages, log_q, strict=True)
        ]
        top = max(logits)
        norm = top + math.log(sum(math.exp(x - top) for x in logits))
        total += norm - logits[j * group_size]
    return total / len(queries)


def test_corrected_info_nce_equals_the_hand_computed_value():
    gen = torch.Generator().manual_seed(0)
    queries = torch.nn.functional.normalize(torch.randn(3, 4, generator=gen), dim=-1)
    passages = torch.nn.functional.normalize(torch.randn(6, 4, generator=gen), dim=-1)
    log_q = -torch.rand(6, generator=gen) * 5
    got = info_nce(queries, passages, 2, 0.1, passage_log_q=log_q)
    assert float(got) == pytest.approx(reference_corrected(queries, passages, log_q, 2, 0.1))
    # A uniform Q shifts every logit alike: the plain InfoNCE.
    uniform = torch.full((6,), math.log(1 / 6))
    assert float(info_nce(queries, passages, 2, 0.1, passage_log_q=uniform)) == pytest.approx(
        float(info_nce(queries, passages, 2, 0.1))
    )


def test_the_correction_lowers_the_penalty_on_a_popular_negative():
    """Query 0's negative is the popular item: uncorrected, it pushes query 0 away from it;
    corrected, its logit drops by log Q and the loss on query 0 falls."""
    queries = torch.tensor([[1.0, 0.0]])
    passages = torch.tensor([[1.0, 0.0], [0.8, 0.6]])  # positive, then the popular negative
    popular = torch.tensor([math.log(0.1), math.log(0.9)])
    plain = info_nce(queries, passages, 2, 0.5)
    corrected = info_nce(queries, passages, 2, 0.5, passage_log_q=popular)
    assert float(corrected) < float(plain)


def test_training_batches_carry_each_drawn_passages_log_q(tiny_model_dir, default_config):
    import datasets
    from transformers import AutoTokenizer

    from recfound.train.batches import PASSAGE_LOG_Q, BatchEncoder

    rows = [
        {
            "id": f"r{i}",
            "task": "U2I",
            "task_id": 0,
            "kind": "embedding",
            "instruction": "Represent the user",
            "input": f"user {i}",
            "positives": [f"item {i}"],
            "positive_ids": [f"i{i}"],
            "negatives": ["item 9", "item 8"],
            "negative_ids": ["i9", "i8"],
        }
        for i in range(2)
    ]
    split = datasets.Dataset.from_list(rows)
    log_q = PassageLogQ.of_split(split, default_config.train.group_size)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    encoder = BatchEncoder(split, tokenizer, default_config.train, "train", log_q=log_q)
    batch = encoder.embedding([0, 1], draw=None)
    # group_size 2: [i0, i9, i1, i9] (draw=None: first positive, first negative)
    want = log_q.of(["i0", "i9", "i1", "i9"]).tolist()
    assert batch[PASSAGE_LOG_Q].tolist() == pytest.approx(want)
    plain = BatchEncoder(split, tokenizer, default_config.train, "train")
    assert PASSAGE_LOG_Q not in plain.embedding([0, 1], draw=None)
