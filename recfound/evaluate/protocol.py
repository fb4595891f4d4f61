"""The per-task evaluation protocol (recfound.md §5): answers in, one TaskResult per task out.

- U2I, Q2I: the positive ranked by cosine similarity among the row's same-category negatives
  → MRR@k. I2I: NDCG@k over the row's pool of positives and negatives.
- SR: the answer letter → Recall@1. SA, PRP: lettered options → macro-F1.
  AP, PM: yes/no → F1 of "yes". AVE: {attribute, value, source} triples → F1 (micro).
- QR, UP, IP, AG: BERTScore F1 (primary) and ROUGE-L F1.
- Outputs that do not parse are counted ("invalid") and scored as wrong (recfound.evaluate.metrics).

Metric keys in results and reports/metrics.json: `MRR@k`, `NDCG@k`, `Recall@1`, `macro_F1`,
`F1_yes`, `F1` (+ `precision`, `recall`), `BERTScore_F1` (+ `ROUGE-L_F1`), and `n`, `invalid`.
Embedding tasks may also carry `Recall@k_full` / `NDCG@k_full`: retrieval over the whole
catalogue rather than the row's pool (recfound.evaluate.full_catalogue).
AVE and SA/PRP also carry `F1_authors` / `macro_F1_authors`: the same answers scored as the
authors' scorer does (recfound.evaluate.metrics `authors_*`), the figure comparable with the
paper's; ours stays the primary (it credits each label once and penalises an invalid answer
without inventing a class for it).

Each score is computed from per-row statistics (recfound.evaluate.row_stats), which the result
keeps (`TaskResult.evidence`) so that `bootstrap.with_intervals` can add a confidence interval
per metric (`ci` in metrics.json) and results of two systems can be compared pairwise.

Results per source: when a task's test rows come from several sources (the `source` column,
e.g. amazon_reviews and movielens), its result also carries one result per source, scored on
that source's rows alone from the same answers (nothing is generated or embedded twice). With
one source there is nothing to split and the result is exactly the overall one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recfound.errors import DataError
from recfound.evaluate import metrics as m
from recfound.evaluate.parsing import (
    parse_attribute_values_authors,
    parse_option_authors,
    parse_output,
    parse_reference,
)
from recfound.evaluate.row_stats import Interval, RowEvidence, RowStats
from recfound.evaluate.systems import Row, System
from recfound.progress import progress
from recfound.tasks import TASKS, Task

# Keys of the per-source results and of the confidence intervals inside a task's entry of
# metrics.json: {"MRR@20": 0.41, "n": 16, "ci": {"MRR@20": {"low": …, "high": …}}}.
SOURCES_KEY = "sources"
INTERVALS_KEY = "ci"
# Suffix of a metric scored as the authors' code scores it, e.g. "F1_authors".
AUTHORS_SUFFIX = "_authors"
# Suffix of a metric over the whole catalogue rather than the row's sampled pool.
FULL_SUFFIX = "_full"
# Task.metric (recfound/tasks.py, the authority) -> key under which the score is stored.
_LABEL_METRIC_KEYS = {
    "Recall@1": "Recall@1",
    "macro-F1": "macro_F1",
    "F1 (yes)": "F1_yes",
    "F1": "F1",
    "BERTScore F1": "BERTScore_F1",
}


def primary_metric(task: Task, cutoff: int) -> str:
    """The key of `task`'s headline metric, e.g. "MRR@20" or "BERTScore_F1"."""
    if task.metric.startswith("MRR@"):
        return f"MRR@{cutoff}"
    if task.metric.startswith("NDCG@"):
        return f"NDCG@{cutoff}"
    return _LABEL_METRIC_KEYS[task.metric]


def full_catalogue_metrics(k: int) -> tuple[str, str]:
    """Keys of the full-catalogue Recall@k and NDCG@k (recfound.evaluate.full_catalogue), e.g.
    ("Recall@10_full", "NDCG@10_full"): beside an embedding task's sampled metric."""
    return f"Recall@{k}{FULL_SUFFIX}", f"NDCG@{k}{FULL_SUFFIX}"


def authors_metric(key: str) -> str:
    """Key of metric `key` scored as the authors do, e.g. "macro_F1" -> "macro_F1_authors"."""
    return key + AUTHORS_SUFFIX


@dataclass(frozen=True)
class TaskResult:
    """One system's scores on one task: `metrics[primary]` is the table entry.

    `by_source`: the same scores per data source, when the task's rows come from several.
    `intervals`: a bootstrap confidence interval per metric key (recfound.evaluate.bootstrap).
    `evidence`: the per-row statistics the scores come from; not part of metrics.json (it is
    written to reports/evidence/) nor of equality.
    """

    task: str
    primary: str
    metrics: dict[str, float]
    n: int
    invalid: int | None = None  # generative tasks only
    by_source: dict[str, TaskResult] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    evidence: RowEvidence | None = field(default=None, compare=False, repr=False)

    @property
    def score(self) -> float:
        return self.metrics[self.primary]

    def to_json(self) -> dict[str, Any]:
        """JSON for reports/metrics.json: metric keys, `n`, `invalid` if generative, `ci`
        ({metric: {"low", "high"}}) if intervals were computed, and `sources` ({source: the
        same keys}) if the rows come from several sources."""
        out: dict[str, Any] = {**self.metrics, "n": self.n}
        if self.invalid is not None:
            out["invalid"] = self.invalid
        if self.intervals:
            out[INTERVALS_KEY] = {key: ci.to_json() for key, ci in self.intervals.items()}
        if self.by_source:
            out[SOURCES_KEY] = {name: r.to_json() for name, r in self.by_source.items()}
        return out

    @classmethod
    def from_json(cls, task: Task, values: Mapping[str, Any], cutoff: int) -> TaskResult:
        """Inverse of `to_json` (the primary key follows from the task and the cutoff)."""
        primary = primary_metric(task, cutoff)
        if primary not in values:
            raise ValueError(f"{task.code}: no {primary!r} among {sorted(values)}")
        not_metrics = ("n", "invalid", SOURCES_KEY, INTERVALS_KEY)
        metrics = {k: float(v) for k, v in values.items() if k not in not_metrics}
        by_source = {
            name: cls.from_json(task, per_source, cutoff)
            for name, per_source in values.get(SOURCES_KEY, {}).items()
        }
        intervals = {
            key: Interval(float(ci["low"]), float(ci["high"]))
            for key, ci in values.get(INTERVALS_KEY, {}).items()
        }
        invalid = values.get("invalid")
        return cls(task.code, primary, metrics, int(values["n"]), invalid, by_source, intervals)


@dataclass
class SystemRun:
    """A system's results per task code, plus the raw generations kept for auditing."""

    name: str
    results: dict[str, TaskResult] = field(default_factory=dict)
    generations: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def rows_by_task(rows: Sequence[Row], tasks: Sequence[Task] = TASKS) -> dict[str, list[Row]]:
    """Group a split's rows by task code, in TASKS order, keeping only `tasks` (default all);
    tasks without rows are left out."""
    wanted = {t.code for t in tasks}
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        if row["task"] in wanted:
            grouped.setdefault(row["task"], []).append(row)
    return {t.code: grouped[t.code] for t in TASKS if t.code in grouped}


def source_indices(rows: Sequence[Row]) -> dict[str, list[int]]:
    """Row positions per `source`, sources sorted; {} when the rows come from one source only
    (or carry no source column): then there is nothing to report per source."""
    by_source: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_source.setdefault(str(row.get("source", "")), []).append(i)
    return dict(sorted(by_source.items())) if len(by_source) > 1 else {}


def _task_result(
    task: Task,
    primary: str,
    rows: Sequence[Row],
    stats: dict[str, RowStats],
    invalid: Sequence[bool] | None = None,
) -> TaskResult:
    """The scores of per-row `stats` over `rows`, overall and, for rows of several sources,
    per source (the same statistics, that source's rows); `invalid` flags unparsed answers."""
    evidence = RowEvidence(
        tuple(str(row["id"]) for row in rows),
        tuple(str(row.get("source", "")) for row in rows),
        stats,
    )

    def scored(part: RowEvidence, idx: Sequence[int]) -> TaskResult:
        n_invalid = None if invalid is None else sum(invalid[i] for i in idx)
        return TaskResult(task.code, primary, part.point_estimates(), len(idx), n_invalid)

    by_source = {
        source: scored(evidence.subset(idx), idx) for source, idx in source_indices(rows).items()
    }
    overall = scored(evidence, range(len(rows)))
    return dataclasses.replace(overall, by_source=by_source, evidence=evidence)


def evaluate_embedding_task(
    system: System, task: Task, rows: Sequence[Row], cutoff: int
) -> TaskResult:
    """Rank each row's pool by the system's scores; MRR@k (U2I, Q2I) or NDCG@k (I2I),
    overall and, for rows of several sources, per source."""
    pools = system.score_pools(task, rows)
    n_positives = [len(row["positives"]) for row in rows]
    key = primary_metric(task, cutoff)
    per_row = m.reciprocal_ranks if key.startswith("MRR@") else m.ndcg_per_query
    stats = {key: RowStats.of_values(per_row(pools, n_positives, cutoff))}
    return _task_result(task, key, rows, stats)


def with_row_stats(
    task: Task, result: TaskResult, rows: Sequence[Row], stats: Mapping[str, RowStats]
) -> TaskResult:
    """Embedding result `result` with more metrics of the same `rows` (full-catalogue
    retrieval): their per-row statistics join its evidence and every score, overall and per
    source, is recomputed from it, so intervals and paired comparisons cover them too."""
    if result.evidence is None or result.invalid is not None:
        raise ValueError(f"{task.code}: only an embedding result with per-row statistics")
    if result.evidence.ids != tuple(str(row["id"]) for row in rows):
        raise ValueError(f"{task.code}: the statistics are of other rows than the result's")
    return _task_result(task, result.primary, rows, {**result.evidence.stats, **stats})


def _references(task: Task, rows: Sequence[Row], source: Path) -> list[Any]:
    references = []
    for row in rows:
        try:
            references.append(parse_reference(task, row["output"], row["options"]))
        except ValueError as err:
            raise DataError(source, f"test row {row['id']} ({task.code}): {err}") from None
    return references


def score_generations(
    task: Task,
    rows: Sequence[Row],
    outputs: Sequence[str],
    text_scorer: m.PairScorer,
    source: Path = Path("test split"),
) -> tuple[TaskResult, list[dict[str, Any]]]:
    """Parse `outputs` against the rows' references and score them by the task's metric.

    Returns the result and one audit record per row (id, raw output, valid, reference).
    `source` names the dataset in the error raised for a reference that does not parse.
    """
    if len(outputs) != len(rows):
        raise ValueError(f"{task.code}: {len(outputs)} outputs for {len(rows)} rows")
    predictions = [
        parse_output(task, out, row["options"]) for out, row in zip(outputs, rows, strict=True)
    ]
    references = _references(task, rows, source)
    stats = _generative_stats(task, outputs, predictions, references, text_scorer)
    invalid = [p is None for p in predictions]
    result = _task_result(task, _LABEL_METRIC_KEYS[task.metric], rows, stats, invalid)
    records = [
        {"id": row["id"], "output": out, "valid": pred is not None, "reference": row["output"]}
        for row, out, pred in zip(rows, outputs, predictions, strict=True)
    ]
    return result, records


def _generative_stats(
    task: Task,
    outputs: Sequence[str],
    predictions: Sequence[Any],
    references: Sequence[Any],
    text_scorer: m.PairScorer,
) -> dict[str, RowStats]:
    """Per-row statistics of the task's metric(s), parsed predictions against parsed
    references (recfound.evaluate.bootstrap gives each kind's formula). The authors' scores
    re-read the raw `outputs` the way their scorer does. Free text is scored once per row."""
    key = _LABEL_METRIC_KEYS[task.metric]
    if key == "Recall@1":
        return {key: RowStats.of_values(m.label_hits(predictions, references))}
    if key == "macro_F1":
        theirs = [parse_option_authors(out) for out in outputs]
        return {
            key: _macro_f1_stats(predictions, references),
            authors_metric(key): _macro_f1_stats(
                m.authors_flip_invalid(theirs, references), references
            ),
        }
    if key == "F1_yes":
        return {key: RowStats("f1", m.positive_counts(predictions, references))}
    if key == "F1":
        ours = m.attribute_value_counts(predictions, references)
        theirs = [parse_attribute_values_authors(out) for out in outputs]
        return {
            "F1": RowStats("f1", ours),
            "precision": RowStats("precision", ours),
            "recall": RowStats("recall", ours),
            authors_metric(key): RowStats(
                "f1", m.authors_attribute_value_counts(theirs, references)
            ),
        }
    return {
        key: RowStats.of_values(m.pair_scores(predictions, references, text_scorer)),
        "ROUGE-L_F1": RowStats.of_values(m.pair_scores(predictions, references, m.rouge_l_f1)),
    }


def _macro_f1_stats(predictions: Sequence[str | None], references: Sequence[str]) -> RowStats:
    """Per-class counts over the classes `macro_f1` averages (invalid = None adds none)."""
    classes = m.seen_classes(predictions, references)
    return RowStats("macro_f1", m.class_counts(predictions, references, classes), tuple(classes))


def evaluate_system(
    system: System,
    rows: Mapping[str, Sequence[Row]],
    text_scorer: m.PairScorer,
    cutoff: int,
    source: Path = Path("test split"),
) -> SystemRun:
    """Run `system` on every task it supports among `rows` (task code -> rows)."""
    run = SystemRun(system.name)
    tasks = [t for t in TASKS if t.code in rows and system.supports(t)]
    for task in progress(tasks, desc=f"evaluate {system.name}", unit="task"):
        task_rows = rows[task.code]
        if task.is_embedding:
            run.results[task.code] = evaluate_embedding_task(system, task, task_rows, cutoff)
        else:
            outputs = system.generate(task, task_rows)
            result, records = score_generations(task, task_rows, outputs, text_scorer, source)
            run.results[task.code] = result
            run.generations[task.code] = records
    return run
