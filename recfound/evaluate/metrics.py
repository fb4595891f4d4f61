"""The test metrics of recfound.md §5, as pure functions of predictions and references.

Conventions shared by every function here:
- An unparseable output arrives as `None` and is scored as wrong (never as correct, never as
  a free pass); how exactly depends on the metric and is stated in each docstring.
- Ranking metrics take, per query, the scores of its candidate pool with the positives first:
  `scores[:n_positives]` are positives, the rest negatives. Ties are broken uniformly at random
  *in expectation* (as scikit-learn's `ndcg_score` does), so a model that scores every candidate
  the same gets the random baseline, not a perfect score.
- Each metric also has a per-row form (`reciprocal_ranks`, `label_hits`, `class_counts`, …):
  additive statistics whose sum gives the metric back (recfound.evaluate.bootstrap resamples
  them). Counts come as (hits, predicted, actual) per row, from which precision = hits /
  predicted, recall = hits / actual and F1 = 2·hits / (predicted + actual).
- `authors_*`: the scorer of the authors' code (JunkFood436/RecFound, scripts/eval.py), for the
  paper-comparable figures beside ours; each docstring says where it differs.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, ndcg_score

# Columns of the per-row counts: F1 = 2·hits / (predicted + actual) needs no other number.
COUNT_COLUMNS: tuple[str, ...] = ("hits", "predicted", "actual")

# Stands in for an unparseable prediction in label metrics: it equals no reference label and is
# left out of the label set, so it is a miss for the true class without adding a class of its own.
_INVALID_LABEL = "\x00invalid"


# --- ranking (U2I/Q2I/I2I) ---


def reciprocal_rank(scores: Sequence[float], n_positives: int, k: int) -> float:
    """Expected reciprocal rank of the best-ranked positive, counted only within the top `k`.

    With g = #negatives scoring above the best positive and t = #negatives tied with it, the
    positive's rank is uniform on {g+1, …, g+t+1}; RR = mean over those ranks r ≤ k of 1/r
    (ranks beyond k contribute 0). Without ties this is 1/(g+1), or 0 when g+1 > k.
    """
    scores = np.asarray(scores, dtype=float)
    if not 1 <= n_positives <= len(scores):
        raise ValueError(f"need 1 ≤ n_positives ≤ {len(scores)}, got {n_positives}")
    best = scores[:n_positives].max()
    negatives = scores[n_positives:]
    above = int((negatives > best).sum())
    tied = int((negatives == best).sum())
    ranks = np.arange(above + 1, above + tied + 2)
    return float(np.where(ranks <= k, 1.0 / ranks, 0.0).mean())


def reciprocal_ranks(
    pools: Sequence[Sequence[float]], n_positives: Sequence[int], k: int
) -> np.ndarray:
    """`reciprocal_rank` of each query (the per-row form of MRR@k)."""
    if not pools:
        raise ValueError("reciprocal_ranks needs at least one query")
    return np.array([reciprocal_rank(s, n, k) for s, n in zip(pools, n_positives, strict=True)])


def mrr_at_k(pools: Sequence[Sequence[float]], n_positives: Sequence[int], k: int) -> float:
    """MRR@k = mean over queries of `reciprocal_rank(scores, n_positives, k)`."""
    return float(np.mean(reciprocal_ranks(pools, n_positives, k)))


def ndcg_per_query(
    pools: Sequence[Sequence[float]], n_positives: Sequence[int], k: int
) -> np.ndarray:
    """NDCG@k of each query with binary relevance (positives 1, negatives 0).

    DCG@k = Σ_{r≤k} rel_r / log2(r + 1), divided by the DCG of the ideal order; via
    scikit-learn's `ndcg_score` (tied scores get their averaged gain).
    """
    if not pools:
        raise ValueError("ndcg_per_query needs at least one query")
    values = []
    for scores, n_pos in zip(pools, n_positives, strict=True):
        if not 1 <= n_pos < len(scores):
            raise ValueError(f"a pool needs ≥1 positive and ≥1 negative, got {n_pos}/{len(scores)}")
        relevance = np.zeros(len(scores))
        relevance[:n_pos] = 1.0
        values.append(ndcg_score([relevance], [np.asarray(scores, dtype=float)], k=k))
    return np.array(values)


def ndcg_at_k(pools: Sequence[Sequence[float]], n_positives: Sequence[int], k: int) -> float:
    """NDCG@k averaged over queries (`ndcg_per_query`)."""
    return float(np.mean(ndcg_per_query(pools, n_positives, k)))


# --- labels (SR/SA/PRP/AP/PM) ---


def _labels_or_invalid(predictions: Sequence[str | None]) -> list[str]:
    return [_INVALID_LABEL if p is None else p for p in predictions]


def recall_at_1(predictions: Sequence[str | None], references: Sequence[str]) -> float:
    """SR: fraction of queries whose predicted letter is the reference letter (= accuracy).

    With one relevant candidate among the lettered ones, Recall@1 equals accuracy; an invalid
    output is a miss.
    """
    _check_lengths(predictions, references)
    return float(accuracy_score(list(references), _labels_or_invalid(predictions)))


def label_hits(predictions: Sequence[str | None], references: Sequence[str]) -> np.ndarray:
    """1.0 where the prediction is the reference, else 0.0 (invalid: 0); mean = `recall_at_1`."""
    _check_lengths(predictions, references)
    return np.array(
        [float(p is not None and p == r) for p, r in zip(predictions, references, strict=True)]
    )


def seen_classes(predictions: Sequence[str | None], references: Sequence[str]) -> list[str]:
    """The classes macro-F1 averages over: labels in references or valid predictions, sorted."""
    return sorted(set(references) | {p for p in predictions if p is not None})


def macro_f1(predictions: Sequence[str | None], references: Sequence[str]) -> float:
    """SA, PRP: unweighted mean over classes of per-class F1 = 2PR/(P+R).

    Classes = the labels seen in references or valid predictions. An invalid output is a false
    negative of its reference class and a false positive of none.
    """
    _check_lengths(predictions, references)
    labels = seen_classes(predictions, references)
    return float(
        f1_score(
            list(references),
            _labels_or_invalid(predictions),
            labels=labels,
            average="macro",
            zero_division=0.0,
        )
    )


def class_counts(
    predictions: Sequence[str | None], references: Sequence[str], classes: Sequence[str]
) -> np.ndarray:
    """(rows × 3·C): per row, the (hits, predicted, actual) counts of each class in turn.

    Class c's F1 is 2·Σhits_c / (Σpredicted_c + Σactual_c); averaged over the classes with
    predicted + actual > 0 it is `macro_f1` (an invalid output adds to `actual` only).
    """
    _check_lengths(predictions, references)
    index = {c: i for i, c in enumerate(classes)}
    counts = np.zeros((len(references), len(classes), len(COUNT_COLUMNS)))
    for row, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        counts[row, index[ref], 2] = 1.0
        if pred is not None:
            counts[row, index[pred], 1] = 1.0
            counts[row, index[pred], 0] = float(pred == ref)
    return counts.reshape(len(references), -1)


def positive_f1(
    predictions: Sequence[str | None],
    references: Sequence[str],
    positive: str = "yes",
    negative: str = "no",
) -> float:
    """AP, PM: F1 of the `positive` class, 2·TP / (2·TP + FP + FN).

    An invalid output is flipped to the wrong answer, as the reference implementation does
    (a "no" reference becomes a false positive, a "yes" one a false negative); leaving it out
    would let a model dodge every hard negative by emitting garbage.
    """
    flipped = _flip_invalid(predictions, references, positive, negative)
    return float(
        f1_score(list(references), flipped, pos_label=positive, average="binary", zero_division=0.0)
    )


def positive_counts(
    predictions: Sequence[str | None],
    references: Sequence[str],
    positive: str = "yes",
    negative: str = "no",
) -> np.ndarray:
    """(rows × 3) counts (hits, predicted, actual) of the `positive` class, invalid outputs
    flipped as in `positive_f1`; F1 = 2·Σhits / (Σpredicted + Σactual) is `positive_f1`."""
    flipped = _flip_invalid(predictions, references, positive, negative)
    return np.array(
        [
            [p == r == positive, p == positive, r == positive]
            for p, r in zip(flipped, references, strict=True)
        ],
        dtype=float,
    ).reshape(len(references), len(COUNT_COLUMNS))


def _flip_invalid(
    predictions: Sequence[str | None], references: Sequence[str], positive: str, negative: str
) -> list[str]:
    """Invalid (None) predictions replaced by the answer that is wrong for their row."""
    _check_lengths(predictions, references)
    allowed = {positive, negative}
    bad = sorted({r for r in references if r not in allowed})
    if bad:
        raise ValueError(f"references must be {positive!r}/{negative!r}, got {bad}")
    return [
        p if p is not None else (negative if r == positive else positive)
        for p, r in zip(predictions, references, strict=True)
    ]


# --- AVE ---


@dataclass(frozen=True)
class AttributeValue:
    """One extracted {attribute, value, source} triple (AVE)."""

    attribute: str
    value: str
    source: str


@dataclass(frozen=True)
class PrecisionRecallF1:
    precision: float
    recall: float
    f1: float


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _equal_or_contains(a: str, b: str) -> bool:
    # An empty string is "contained" in everything; it must only match another empty string.
    if not a or not b:
        return a == b
    return a == b or a in b or b in a


def attribute_value_hits(predicted: AttributeValue, label: AttributeValue) -> bool:
    """The AVE rule: attributes equal, and value and source each equal or one containing the other.

    Comparison is case-insensitive with whitespace collapsed.
    """
    return (
        _normalise(predicted.attribute) == _normalise(label.attribute)
        and _equal_or_contains(_normalise(predicted.value), _normalise(label.value))
        and _equal_or_contains(_normalise(predicted.source), _normalise(label.source))
    )


def _matched_pairs(predicted: Sequence[AttributeValue], labels: Sequence[AttributeValue]) -> int:
    """Greedy one-to-one matching: each label can be hit by one prediction at most."""
    free = list(labels)
    matched = 0
    for pred in predicted:
        for i, label in enumerate(free):
            if attribute_value_hits(pred, label):
                del free[i]
                matched += 1
                break
    return matched


def attribute_value_prf(
    predictions: Sequence[Sequence[AttributeValue] | None],
    references: Sequence[Sequence[AttributeValue]],
) -> PrecisionRecallF1:
    """AVE, micro over all labels: P = hits / #predicted, R = hits / #labels, F1 = 2PR/(P+R).

    Hits are one-to-one (a label counts once however often it is predicted). An invalid output
    predicts nothing, so its labels all count as misses.
    """
    hits, n_pred, n_label = attribute_value_counts(predictions, references).sum(axis=0)
    return _precision_recall_f1(hits, n_pred, n_label)


def attribute_value_counts(
    predictions: Sequence[Sequence[AttributeValue] | None],
    references: Sequence[Sequence[AttributeValue]],
) -> np.ndarray:
    """(rows × 3) counts (hits, predicted, actual) of `attribute_value_prf`, one row each."""
    _check_lengths(predictions, references)
    return np.array(
        [
            [_matched_pairs(pred or [], labels), len(pred or []), len(labels)]
            for pred, labels in zip(predictions, references, strict=True)
        ],
        dtype=float,
    ).reshape(len(references), len(COUNT_COLUMNS))


def _precision_recall_f1(hits: float, n_pred: float, n_label: float) -> PrecisionRecallF1:
    precision = float(hits / n_pred) if n_pred else 0.0
    recall = float(hits / n_label) if n_label else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return PrecisionRecallF1(precision, recall, f1)


# --- the authors' scorer (JunkFood436/RecFound scripts/eval.py), for paper-comparable figures ---

# What their scorer writes for an invalid SA/PRP answer: a wrong letter, "B" when the reference
# is "A", else "A" (so the invalid answer is also a false positive of that letter).
_AUTHORS_WRONG_LETTERS = ("A", "B")
_AVE_KEYS = ("attribute", "value", "source")


def authors_flip_invalid(predictions: Sequence[str | None], references: Sequence[str]) -> list[str]:
    """SA/PRP answers as the authors score them: an invalid (None) answer becomes "B" when the
    reference is "A", else "A"."""
    _check_lengths(predictions, references)
    first, second = _AUTHORS_WRONG_LETTERS
    return [
        p if p is not None else (second if r == first else first)
        for p, r in zip(predictions, references, strict=True)
    ]


def authors_macro_f1(predictions: Sequence[str | None], references: Sequence[str]) -> float:
    """SA, PRP as the authors score them: scikit-learn macro-F1 over the classes seen in the
    references and the answers after `authors_flip_invalid`.

    Stricter than `macro_f1`: an invalid answer is a false negative of its reference class
    *and* a false positive of "A" (or "B"), which may even add that class to the average.
    `predictions` come from `parsing.parse_option_authors` (first character A–E).
    """
    flipped = authors_flip_invalid(predictions, references)
    return float(f1_score(list(references), flipped, average="macro", zero_division=0.0))


def authors_attribute_value_hit(predicted: Mapping[str, Any], label: AttributeValue) -> bool:
    """Their AVE rule: the attributes are equal, and value and source are each equal or one
    contains the other, compared as written: case- and whitespace-sensitive, and an empty
    string is contained in anything. A prediction missing a key, or with a null value or
    source, hits nothing; non-string values are compared as `str()` (their script compares
    values so and would fail on a non-string source)."""
    if not all(key in predicted for key in _AVE_KEYS):
        return False
    value, source = predicted["value"], predicted["source"]
    if value is None or source is None:
        return False
    return (
        predicted["attribute"] == label.attribute
        and _either_contains(str(value), label.value)
        and _either_contains(str(source), label.source)
    )


def _either_contains(a: str, b: str) -> bool:
    return a in b or b in a


def authors_attribute_value_counts(
    predictions: Sequence[Sequence[Any] | None],
    references: Sequence[Sequence[AttributeValue]],
) -> np.ndarray:
    """(rows × 3) counts (hits, predicted, actual) of AVE as the authors' scorer counts them.

    Their loop runs over the labels of a row and, inside it, over all its predictions, so
    - hits = #(label, prediction) pairs that hit (`authors_attribute_value_hit`): a prediction
      hitting two labels counts twice, two equal predictions of one label count twice;
    - predicted = #labels × #predictions (JSON objects with an "attribute" key): every
      prediction is counted once per label of its row, none on a row without labels;
    - actual = #labels.
    So 3 correct predictions of 3 labels give P = 3/9, R = 1, F1 = 0.50 (1.0 in
    `attribute_value_prf`), and recall can exceed 1. An invalid output (None) predicts nothing.
    """
    _check_lengths(predictions, references)
    rows = []
    for pred, labels in zip(predictions, references, strict=True):
        counted = [p for p in pred or [] if isinstance(p, Mapping) and "attribute" in p]
        hits = sum(authors_attribute_value_hit(p, label) for label in labels for p in counted)
        rows.append([hits, len(labels) * len(counted), len(labels)])
    return np.array(rows, dtype=float).reshape(len(references), len(COUNT_COLUMNS))


def authors_attribute_value_prf(
    predictions: Sequence[Sequence[Any] | None],
    references: Sequence[Sequence[AttributeValue]],
) -> PrecisionRecallF1:
    """AVE P, R, F1 over the whole test set from `authors_attribute_value_counts` (their
    1e-6 guards against division by zero are left out: an empty denominator gives 0)."""
    hits, n_pred, n_label = authors_attribute_value_counts(predictions, references).sum(axis=0)
    return _precision_recall_f1(hits, n_pred, n_label)


# --- text (QR/UP/IP/AG) ---

# (candidates, references) -> one similarity per pair, e.g. BERTScore F1.
PairScorer = Callable[[list[str], list[str]], list[float]]


def pair_scores(
    predictions: Sequence[str | None], references: Sequence[str], scorer: PairScorer
) -> np.ndarray:
    """`scorer` of each (prediction, reference) pair; an invalid output scores 0 unscored."""
    _check_lengths(predictions, references)
    if not predictions:
        raise ValueError("pair_scores needs at least one prediction")
    valid = [i for i, p in enumerate(predictions) if p is not None]
    scores = np.zeros(len(predictions))
    if valid:
        scored = scorer([predictions[i] for i in valid], [references[i] for i in valid])
        scores[valid] = np.asarray(scored, dtype=float)
    return scores


def mean_pair_score(
    predictions: Sequence[str | None], references: Sequence[str], scorer: PairScorer
) -> float:
    """Mean of `scorer` over (prediction, reference) pairs; an invalid output scores 0."""
    return float(pair_scores(predictions, references, scorer).mean())


@functools.cache
def _rouge_l_scorer():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l_f1(candidates: list[str], references: list[str]) -> list[float]:
    """ROUGE-L F-measure per pair (longest common subsequence of tokens, Porter-stemmed)."""
    scorer = _rouge_l_scorer()
    return [
        scorer.score(ref, cand)["rougeL"].fmeasure
        for cand, ref in zip(candidates, references, strict=True)
    ]


class BertScoreF1:
    """BERTScore F1 per pair (greedy cosine matching of contextual token embeddings).

    P = mean over candidate tokens of the max cosine to a reference token, R the converse,
    F1 = 2PR/(P+R); embeddings from layer `num_layers` of the encoder in `model_dir` (a local
    directory: no hub access). The encoder loads on first use and is kept for later calls.
    """

    def __init__(self, model_dir: str, num_layers: int, batch_size: int, device: str) -> None:
        self.model_dir = model_dir
        self.num_layers = num_layers
        self.batch_size = batch_size
        self.device = device
        self._scorer = None

    def __call__(self, candidates: list[str], references: list[str]) -> list[float]:
        if self._scorer is None:
            from bert_score import BERTScorer

            self._scorer = BERTScorer(
                model_type=self.model_dir,
                num_layers=self.num_layers,
                batch_size=self.batch_size,
                device=self.device,
            )
        _, _, f1 = self._scorer.score(candidates, references, batch_size=self.batch_size)
        return f1.tolist()


def _check_lengths(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
