"""Bootstrap intervals of every test metric, and paired comparisons of two systems.

Every metric is a finisher f of additive per-row statistics: row i of a task contributes a
vector s_i (a row of `RowStats.table`), and on the rows taken with multiplicities w
(Σ_i w_i = n) the metric is f(Σ_i w_i s_i):

    kind       s_i                                f(S), S = Σ_i w_i s_i
    mean       the row's value x_i                S / n
    precision  (hits, predicted, actual)          hits / predicted
    recall     (hits, predicted, actual)          hits / actual
    f1         (hits, predicted, actual)          2·hits / (predicted + actual)
    macro_f1   (hits, predicted, actual) of each  mean over the classes c with
               class c in turn                    predicted_c + actual_c > 0 of
                                                  2·hits_c / (predicted_c + actual_c)

A ratio with a zero denominator is 0, as the metrics' `zero_division`. With w = 1 this is the
point estimate, the number the metric functions of recfound.evaluate.metrics give
(tests/test_metrics.py checks it for every kind). Which metric is which kind:
MRR@k, NDCG@k, Recall@1, BERTScore_F1, ROUGE-L_F1 are means; F1_yes is f1 of the "yes"
counts; AVE F1 / precision / recall / F1_authors are f1 / precision / recall of the micro
counts over all labels; macro_F1 and macro_F1_authors are macro_f1 (recfound.evaluate.protocol).
Macro-F1 averages over the classes present in the rows scored, so on a resample it is exactly
macro-F1 computed on those rows: a class the resample happens to miss neither scores 0 nor counts.

Resampling: B resamples of a task's n test rows, each n draws with replacement. Resample b is
the weight vector w_b (how often each row was drawn), so the B replicates of a metric are
f(W S) with W (B × n) and S (n × d): one matrix product. The generator is seeded by the
top-level seed and the task code (plus the source, for a per-source result) and nothing else,
so every system scored on the same rows is resampled by the same W.

Interval: the percentile interval, the α/2 and 1 − α/2 quantiles of the B replicates, with
α = 1 − confidence. Paired comparison of systems A and B on the same rows (equal row ids, same
order): d_b = f_A(w_b S_A) − f_B(w_b S_B) with the same w_b for both, the point difference
f_A(ΣS_A) − f_B(ΣS_B) and the percentile interval of the d_b. The difference "excludes zero"
when low > 0 (A better) or high < 0 (A worse); a system compared with itself gives d_b = 0
exactly. Pairing removes the variation the two systems share (hard rows are hard for both), so
a paired interval is narrower than the two separate ones suggest.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recfound.atomic import atomic_dir
from recfound.errors import DataError
from recfound.evaluate.row_stats import Interval, RowEvidence

if TYPE_CHECKING:
    from recfound.config import Config
    from recfound.evaluate.protocol import TaskResult

# Resample weights are drawn in blocks of at most this many entries (resamples × rows), so a
# large test split never holds the whole B × n matrix: 2**22 float64 weights are 32 MiB.
_WEIGHTS_PER_BLOCK = 1 << 22
# One system's per-row statistics of every task (reports/evidence/<system>.json) and of a
# variant (reports/variants/<name>/evidence.json).
EVIDENCE_FILE = "evidence.json"


@dataclass(frozen=True)
class BootstrapSettings:
    """B (`samples`), the interval's coverage (`confidence`) and the seed of the resampling."""

    samples: int
    confidence: float
    seed: int

    @classmethod
    def from_config(cls, cfg: Config) -> BootstrapSettings:
        """`evaluate.bootstrap_samples`, `evaluate.confidence` and the top-level seed."""
        return cls(cfg.evaluate.bootstrap_samples, cfg.evaluate.confidence, cfg.seed)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Difference:
    """A paired difference (reference system minus another) with its bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def sign(self) -> int:
        """+1 when the interval lies above 0 (reference better), −1 below (worse), 0 when it
        contains 0 (inconclusive at the chosen confidence)."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def to_json(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high, "sign": self.sign}


def stream(task: str, source: str | None = None) -> str:
    """The name that seeds a result's resamples: the task code, or "code[source]"."""
    return task if source is None else f"{task}[{source}]"


def resample_weights(n_rows: int, settings: BootstrapSettings, name: str) -> Iterator[np.ndarray]:
    """The B resamples of `n_rows` rows as weight blocks (resamples × n_rows): how often each
    row was drawn. Seeded by `settings.seed` and `name` (a `stream`) only; crc32 because
    Python's str hash changes from process to process."""
    if n_rows < 1:
        raise ValueError("a bootstrap needs at least one row")
    rng = np.random.default_rng([settings.seed, zlib.crc32(name.encode("utf-8"))])
    per_block = max(1, _WEIGHTS_PER_BLOCK // n_rows)
    for start in range(0, settings.samples, per_block):
        size = min(per_block, settings.samples - start)
        draws = rng.integers(0, n_rows, size=(size, n_rows))
        # One bincount over the whole block: row b's draws are shifted into their own range.
        shifted = draws + np.arange(size)[:, None] * n_rows
        counts = np.bincount(shifted.ravel(), minlength=size * n_rows)
        yield counts.reshape(size, n_rows).astype(float)


def replicates(
    evidence: RowEvidence, settings: BootstrapSettings, name: str
) -> dict[str, np.ndarray]:
    """Each metric of `evidence` on each of the B resamples (module docstring): key -> (B,)."""
    n_rows = len(evidence.ids)
    blocks: dict[str, list[np.ndarray]] = {key: [] for key in evidence.stats}
    for weights in resample_weights(n_rows, settings, name):
        for key, stats in evidence.stats.items():
            blocks[key].append(stats.finish(weights @ stats.table, n_rows))
    return {key: np.concatenate(parts) for key, parts in blocks.items()}


def percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """The (α/2, 1 − α/2) quantiles of `values`, α = 1 − confidence."""
    alpha = 1.0 - confidence
    low, high = np.quantile(values, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


def intervals(evidence: RowEvidence, settings: BootstrapSettings, name: str) -> dict[str, Interval]:
    """The percentile interval of each metric of `evidence` (seeded by `name`)."""
    return {
        key: Interval(*percentile_interval(values, settings.confidence))
        for key, values in replicates(evidence, settings, name).items()
    }


class RowMismatch(ValueError):
    """Two systems' results are not on the same test rows, so they cannot be paired."""


def paired_differences(
    ours: RowEvidence, theirs: RowEvidence, settings: BootstrapSettings, name: str
) -> dict[str, Difference]:
    """`ours` − `theirs` for each metric both have, on the same resamples (module docstring).

    Raises RowMismatch unless both hold the same row ids in the same order.
    """
    if ours.ids != theirs.ids:
        raise RowMismatch(f"{name}: the two results are on different test rows")
    keys = [key for key in ours.stats if key in theirs.stats]
    ours_kept = dataclasses.replace(ours, stats={k: ours.stats[k] for k in keys})
    theirs_kept = dataclasses.replace(theirs, stats={k: theirs.stats[k] for k in keys})
    ours_reps = replicates(ours_kept, settings, name)
    theirs_reps = replicates(theirs_kept, settings, name)
    out = {}
    for key in keys:
        low, high = percentile_interval(ours_reps[key] - theirs_reps[key], settings.confidence)
        value = ours.stats[key].point() - theirs.stats[key].point()
        out[key] = Difference(value, low, high)
    return out


# --- over TaskResults (recfound.evaluate.protocol) and whole result sets


def with_intervals(result: TaskResult, settings: BootstrapSettings) -> TaskResult:
    """`result` with an interval for each metric it has per-row statistics of, and the same
    for each of its per-source results; unchanged when it has no statistics (results written
    before intervals existed)."""
    evidence = result.evidence
    if evidence is None:
        return result
    by_source = {
        source: dataclasses.replace(
            part,
            intervals=intervals(evidence.for_source(source), settings, stream(result.task, source)),
        )
        for source, part in result.by_source.items()
    }
    return dataclasses.replace(
        result, intervals=intervals(evidence, settings, stream(result.task)), by_source=by_source
    )


def attach_intervals(
    results: Mapping[str, Mapping[str, TaskResult]], settings: BootstrapSettings
) -> dict[str, dict[str, TaskResult]]:
    """`with_intervals` on every result of every system (system -> task code -> result)."""
    return {
        name: {code: with_intervals(result, settings) for code, result in per_task.items()}
        for name, per_task in results.items()
    }


@dataclass(frozen=True)
class Comparisons:
    """`reference` minus each other system, per task and metric (paired bootstrap).

    `left_out` names the systems that could not be paired and why.
    """

    reference: str
    settings: BootstrapSettings
    differences: dict[str, dict[str, dict[str, Difference]]]  # system -> task -> metric -> Δ
    left_out: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "bootstrap": self.settings.to_json(),
            "differences": {
                name: {
                    code: {key: diff.to_json() for key, diff in per_metric.items()}
                    for code, per_metric in per_task.items()
                }
                for name, per_task in self.differences.items()
            },
            "left_out": dict(self.left_out),
        }


NO_EVIDENCE = "no per-row statistics (written before intervals existed)"


def compare_systems(
    results: Mapping[str, Mapping[str, TaskResult]],
    reference: str,
    settings: BootstrapSettings,
) -> Comparisons:
    """Paired differences of `reference` with every other system of `results`, on the tasks
    both were scored on. A system without per-row statistics, or scored on other test rows
    (e.g. a variant evaluated before the test split changed), is left out and named."""
    differences: dict[str, dict[str, dict[str, Difference]]] = {}
    left_out: dict[str, str] = {}
    ours = results.get(reference, {})
    for name, theirs in results.items():
        if name == reference:
            continue
        shared = [code for code in ours if code in theirs]
        if any(ours[c].evidence is None or theirs[c].evidence is None for c in shared):
            left_out[name] = NO_EVIDENCE
            continue
        try:
            differences[name] = {
                code: paired_differences(
                    ours[code].evidence, theirs[code].evidence, settings, stream(code)
                )
                for code in shared
            }
        except RowMismatch as err:
            left_out[name] = f"test rows differ from the current split ({err})"
    return Comparisons(reference, settings, differences, left_out)


# --- files


def evidence_json(per_task: Mapping[str, TaskResult]) -> dict[str, Any]:
    """{task code: RowEvidence JSON} of one system's results that carry per-row statistics."""
    return {
        code: result.evidence.to_json()
        for code, result in per_task.items()
        if result.evidence is not None
    }


def write_evidence(out_dir: Path, results: Mapping[str, Mapping[str, TaskResult]]) -> Path:
    """reports/evidence/<system>.json for every system (atomically, as one directory)."""
    with atomic_dir(out_dir) as tmp:
        for name, per_task in results.items():
            text = json.dumps(evidence_json(per_task), ensure_ascii=False)
            (tmp / f"{name}.json").write_text(text + "\n", encoding="utf-8")
    return out_dir


def read_evidence(path: Path) -> dict[str, RowEvidence]:
    """{task code: RowEvidence} from a file `evidence_json` wrote."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        return {code: RowEvidence.from_json(value) for code, value in raw.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(path, f"not a per-row statistics file: {err}") from None


def attach_evidence(
    per_task: Mapping[str, TaskResult], evidence: Mapping[str, RowEvidence], path: Path
) -> dict[str, TaskResult]:
    """One system's results (read from metrics.json) joined with their per-row statistics
    (read from `path`); a task whose statistics cover another number of rows is an error."""
    joined = {}
    for code, result in per_task.items():
        rows = evidence.get(code)
        if rows is not None and len(rows.ids) != result.n:
            raise DataError(path, f"{code}: statistics of {len(rows.ids)} rows, n = {result.n}")
        joined[code] = result if rows is None else dataclasses.replace(result, evidence=rows)
    return joined
