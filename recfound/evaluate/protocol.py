"""The per-task evaluation protocol (recfound.md §5): answers in, one TaskResult per task out.

- U2I, Q2I: the positive ranked by cosine similarity among the row's same-category negatives
  → MRR@k. I2I: NDCG@k over the row's pool of positives and negatives.
- SR: the answer letter → Recall@1. SA, PRP: lettered options → macro-F1.
  AP, PM: yes/no → F1 of "yes". AVE: {attribute, value, source} triples → F1 (micro).
- QR, UP, IP, AG: BERTScore F1 (primary) and ROUGE-L F1.
- Outputs that do not parse are counted ("invalid") and scored as wrong (recfound.evaluate.metrics).

Metric keys in results and reports/metrics.json: `MRR@k`, `NDCG@k`, `Recall@1`, `macro_F1`,
`F1_yes`, `F1` (+ `precision`, `recall`), `BERTScore_F1` (+ `ROUGE-L_F1`), and `n`, `invalid`.

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

import numpy as np
from tqdm.auto import tqdm

from recfound.errors import DataError
from recfound.evaluate import metrics as m
from recfound.evaluate.parsing import parse_output, parse_reference
from recfound.evaluate.systems import Row, System
from recfound.tasks import TASKS, Task

# Key of the per-source results inside a task's entry of metrics.json.
SOURCES_KEY = "sources"
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


@dataclass(frozen=True)
class TaskResult:
    """One system's scores on one task: `metrics[primary]` is the table entry.

    `by_source`: the same scores per data source, when the task's rows come from several.
    """

    task: str
    primary: str
    metrics: dict[str, float]
    n: int
    invalid: int | None = None  # generative tasks only
    by_source: dict[str, TaskResult] = field(default_factory=dict)

    @property
    def score(self) -> float:
        return self.metrics[self.primary]

    def to_json(self) -> dict[str, Any]:
        """JSON for reports/metrics.json: metric keys, `n`, `invalid` if generative, and
        `sources` ({source: the same keys}) if the rows come from several sources."""
        out: dict[str, Any] = {**self.metrics, "n": self.n}
        if self.invalid is not None:
            out["invalid"] = self.invalid
        if self.by_source:
            out[SOURCES_KEY] = {name: r.to_json() for name, r in self.by_source.items()}
        return out

    @classmethod
    def from_json(cls, task: Task, values: Mapping[str, Any], cutoff: int) -> TaskResult:
        """Inverse of `to_json` (the primary key follows from the task and the cutoff)."""
        primary = primary_metric(task, cutoff)
        if primary not in values:
            raise ValueError(f"{task.code}: no {primary!r} among {sorted(values)}")
        metrics = {k: float(v) for k, v in values.items() if k not in ("n", "invalid", SOURCES_KEY)}
        by_source = {
            name: cls.from_json(task, per_source, cutoff)
            for name, per_source in values.get(SOURCES_KEY, {}).items()
        }
        invalid = values.get("invalid")
        return cls(task.code, primary, metrics, int(values["n"]), invalid, by_source)


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


def _pick(values: Sequence[Any], indices: Sequence[int]) -> list[Any]:
    return [values[i] for i in indices]


def _ranking_result(
    task: Task, pools: Sequence[np.ndarray], n_positives: Sequence[int], cutoff: int
) -> TaskResult:
    key = primary_metric(task, cutoff)
    if key.startswith("MRR@"):
        value = m.mrr_at_k(pools, n_positives, cutoff)
    else:
        value = m.ndcg_at_k(pools, n_positives, cutoff)
    return TaskResult(task.code, key, {key: value}, n=len(pools))


def evaluate_embedding_task(
    system: System, task: Task, rows: Sequence[Row], cutoff: int
) -> TaskResult:
    """Rank each row's pool by the system's scores; MRR@k (U2I, Q2I) or NDCG@k (I2I),
    overall and, for rows of several sources, per source."""
    pools = system.score_pools(task, rows)
    n_positives = [len(row["positives"]) for row in rows]
    overall = _ranking_result(task, pools, n_positives, cutoff)
    by_source = {
        source: _ranking_result(task, _pick(pools, idx), _pick(n_positives, idx), cutoff)
        for source, idx in source_indices(rows).items()
    }
    return dataclasses.replace(overall, by_source=by_source)


class _RememberingScorer:
    """A PairScorer that scores each distinct (candidate, reference) pair once: the per-source
    results re-read the scores of the overall one instead of running the encoder again."""

    def __init__(self, scorer: m.PairScorer) -> None:
        self.scorer = scorer
        self.known: dict[tuple[str, str], float] = {}

    def __call__(self, candidates: list[str], references: list[str]) -> list[float]:
        pairs = list(zip(candidates, references, strict=True))
        new = [p for p in dict.fromkeys(pairs) if p not in self.known]
        if new:
            scores = self.scorer([c for c, _ in new], [r for _, r in new])
            self.known.update(zip(new, (float(x) for x in scores), strict=True))
        return [self.known[p] for p in pairs]


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
    per_source = source_indices(rows)
    if per_source:
        text_scorer = _RememberingScorer(text_scorer)
    overall = _generative_result(task, predictions, references, text_scorer)
    by_source = {
        name: _generative_result(task, _pick(predictions, idx), _pick(references, idx), text_scorer)
        for name, idx in per_source.items()
    }
    records = [
        {"id": row["id"], "output": out, "valid": pred is not None, "reference": row["output"]}
        for row, out, pred in zip(rows, outputs, predictions, strict=True)
    ]
    return dataclasses.replace(overall, by_source=by_source), records


def _generative_result(
    task: Task, predictions: Sequence[Any], references: Sequence[Any], text_scorer: m.PairScorer
) -> TaskResult:
    """The task's metric(s) of parsed predictions against parsed references."""
    key = _LABEL_METRIC_KEYS[task.metric]
    scores: dict[str, float]
    if key == "Recall@1":
        scores = {key: m.recall_at_1(predictions, references)}
    elif key == "macro_F1":
        scores = {key: m.macro_f1(predictions, references)}
    elif key == "F1_yes":
        scores = {key: m.positive_f1(predictions, references)}
    elif key == "F1":
        prf = m.attribute_value_prf(predictions, references)
        scores = {"F1": prf.f1, "precision": prf.precision, "recall": prf.recall}
    else:
        scores = {
            key: m.mean_pair_score(predictions, references, text_scorer),
            "ROUGE-L_F1": m.mean_pair_score(predictions, references, m.rouge_l_f1),
        }
    invalid = sum(p is None for p in predictions)
    return TaskResult(task.code, key, scores, n=len(predictions), invalid=invalid)


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
    for task in tqdm(tasks, desc=f"evaluate {system.name}", unit="task"):
        task_rows = rows[task.code]
        if task.is_embedding:
            run.results[task.code] = evaluate_embedding_task(system, task, task_rows, cutoff)
        else:
            outputs = system.generate(task, task_rows)
            result, records = score_generations(task, task_rows, outputs, text_scorer, source)
            run.results[task.code] = result
            run.generations[task.code] = records
    return run
