"""The leave-one-out protocol's place in the reports (recfound.evaluate.leave_one_out).

- metrics.json: `"leave_one_out": {system: {source: {"HR@10": …, "NDCG@10": …, "n": users,
  "ci": {metric: {"low", "high"}}}}}`, beside the paper's per-task entries.
- comparisons.json: `"leave_one_out"`: RecFound minus each system on the same users, per
  source and metric, paired bootstrap (the layout of the paper protocol's comparisons).
- results.md: the section "Leave-one-out, full ranking (the field's protocol)": one table of
  every system's HR@k / NDCG@k per source with intervals, then the paired differences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from recfound.evaluate import bootstrap, report
from recfound.evaluate.leave_one_out import FieldRun, metric_keys
from recfound.evaluate.protocol import TaskResult

SECTION = "leave_one_out"
TITLE = "Leave-one-out, full ranking (the field's protocol)"
NOTE = (
    "Every user of the build's interaction data (at least `build.min_interactions` "
    "interactions), split by time: the last interaction is the test target, the second-last "
    "the validation target, the rest the training part (interactions of the same second are "
    "ordered by item id). Each test user's history before the target is ranked against every "
    "item of the user's source, the items the user had before the target excluded; HR@k: the "
    "target is among the top k; NDCG@k: 1/log2(rank + 1) when it is. Popularity (training-part "
    "counts), EASE and SASRec (ID-based, full-softmax cross-entropy) are fitted on the "
    "training part; RecFound, the base model and MiniLM embed the history as a U2I query and "
    "search the catalogue (RecFound: the `index` stage's index). docs/evaluation.md relates "
    "these figures to the published ones.\n"
)


@dataclass(frozen=True)
class FieldResults:
    """The protocol's results with intervals, their paired comparisons, the ks and notes."""

    results: dict[str, dict[str, TaskResult]]
    comparisons: bootstrap.Comparisons
    ks: tuple[int, ...]
    notes: tuple[str, ...]


def finish(run: FieldRun, settings: bootstrap.BootstrapSettings, reference: str) -> FieldResults:
    """Intervals on every result, and `reference` minus every other system, paired."""
    results = bootstrap.attach_intervals(run.results, settings)
    comparisons = bootstrap.compare_systems(results, reference, settings)
    return FieldResults(results, comparisons, tuple(run.cfg.k), tuple(run.notes))


def metrics_section(field: FieldResults | None) -> dict[str, Any]:
    """{SECTION: system -> source -> result JSON}, or {} without results."""
    if field is None:
        return {}
    return {
        SECTION: {
            name: {source: r.to_json() for source, r in per_source.items()}
            for name, per_source in field.results.items()
        }
    }


def comparisons_section(field: FieldResults | None) -> dict[str, Any]:
    """{SECTION: the paired comparisons' JSON}, or {} without results."""
    return {SECTION: field.comparisons.to_json()} if field is not None else {}


def _columns(sources: Sequence[str], ks: Sequence[int]) -> list[tuple[str, str, str]]:
    return [
        (f"{source} {key}", source, key) for source in sources for k in ks for key in metric_keys(k)
    ]


def render(field: FieldResults | None) -> str:
    """The results.md section ("" without results)."""
    if field is None or not field.results:
        return ""
    sources = sorted({s for per_source in field.results.values() for s in per_source})
    users = {s: r.n for per_source in field.results.values() for s, r in per_source.items()}
    counts = ", ".join(f"{s} {users[s]}" for s in sources)
    columns = _columns(sources, field.ks)
    sections = [
        f"## {TITLE}\n",
        NOTE,
        f"Test users per source: {counts}.\n",
        report.keyed_table(field.results, columns),
        f"### {report.DISPLAY_NAMES['recfound']} vs each system, paired (the field's protocol)\n",
        report.keyed_comparison_table(field.comparisons, columns),
    ]
    if field.notes:
        sections.append("Not scored: " + "; ".join(field.notes) + ".\n")
    return "\n".join(sections)
