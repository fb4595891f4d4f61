"""reports/metrics.json (DVC metrics) and reports/results.md (the paper's Tables 2–5).

metrics.json is nested JSON that `dvc metrics show` / `dvc metrics diff` flatten:

    {"recfound": {"U2I": {"MRR@20": 0.41, "n": 16}, "QR": {"BERTScore_F1": …, "invalid": 0}, …},
     "no_merge": {…}, "base": {…}, "minilm": {…}, "popularity": {…}, "random": {…},
     "average_rank": {"generative": {"recfound": {"mean": 1.3, "std": 0.46}, …}, "embedding": …}}

A task whose test rows come from several sources also has, beside its overall keys,
`"sources": {"amazon_reviews": {"MRR@20": …, "n": …}, "movielens": {…}}`
(recfound.evaluate.protocol); the overall keys stay where they were.

The tables cover the tasks evaluated (the task set of the dataset, any non-empty subset of the
13): a table with no task of its kind (e.g. Table 2 for an embedding-only dataset) is left out
with a one-line note, and so is its `average_rank` entry.

Average Rank (recfound.md §5): on each task the compared systems are ranked by their score
(1 = best; tied scores share the best of their ranks), then each system's ranks are averaged
over the tasks; std is the population standard deviation of those ranks. Only systems scored
on every task of a table are ranked (a popularity baseline that answers SR alone is not).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from recfound.atomic import atomic_file
from recfound.errors import DataError
from recfound.evaluate.protocol import TaskResult
from recfound.tasks import BY_CODE, TASKS, Kind

# Column orders of the paper's Table 2 (generative) and Table 3 (embedding).
GENERATIVE_COLUMNS: tuple[str, ...] = ("QR", "AVE", "AG", "SR", "SA", "UP", "AP", "PRP", "PM", "IP")
EMBEDDING_COLUMNS: tuple[str, ...] = ("I2I", "Q2I", "U2I")
TEXT_COLUMNS: tuple[str, ...] = tuple(t.code for t in TASKS if t.metric == "BERTScore F1")
COLUMNS_BY_KIND: dict[Kind, tuple[str, ...]] = {
    Kind.GENERATIVE: GENERATIVE_COLUMNS,
    Kind.EMBEDDING: EMBEDDING_COLUMNS,
}

# Rows of the tables, in order, with the names the paper's tables use.
DISPLAY_NAMES: dict[str, str] = {
    "recfound": "RecFound",
    "no_merge": "RecFound w/o Model Merge",
    "no_s2sched": "RecFound w/o S2Sched",
    "no_tmole": "RecFound w/o TMoLE",
    "multitask_lora": "Multi-task LoRA (no TMoLE, no S2Sched)",
    "base": "Base model, no finetuning",
    "minilm": "all-MiniLM-L6-v2 (off the shelf)",
    "popularity": "Popularity",
    "random": "Random",
}
# Ablation rows (Table 4): the paper compares them with RecFound w/o Model Merge.
ABLATION_ROWS: tuple[str, ...] = (
    "recfound",
    "no_merge",
    "no_s2sched",
    "no_tmole",
    "multitask_lora",
)
MISSING = "—"

Results = dict[str, dict[str, TaskResult]]  # system -> task code -> result


@dataclass(frozen=True)
class AverageRank:
    mean: float
    std: float


def average_ranks(
    results: Mapping[str, Mapping[str, TaskResult]], tasks: Sequence[str]
) -> dict[str, AverageRank]:
    """Average Rank over `tasks` of the systems scored on every one of them (module docstring).

    Systems covering only some of the tasks (e.g. popularity: SR only) are reference points:
    they are neither ranked nor allowed to shift the ranks of the full systems.
    """
    complete = {name: res for name, res in results.items() if all(t in res for t in tasks)}
    ranks: dict[str, list[float]] = {name: [] for name in complete}
    for task in tasks:
        names = list(complete)
        # rankdata ranks ascending; negate so the highest score gets rank 1.
        task_ranks = rankdata([-complete[name][task].score for name in names], method="min")
        for name, rank in zip(names, task_ranks, strict=True):
            ranks[name].append(float(rank))
    return {
        name: AverageRank(float(np.mean(values)), float(np.std(values)))
        for name, values in ranks.items()
        if values
    }


def evaluated_tasks(results: Mapping[str, Mapping[str, TaskResult]]) -> set[str]:
    """The task codes any system was scored on (the evaluated task set)."""
    return {code for per_task in results.values() for code in per_task}


def present_columns(columns: Sequence[str], tasks: Collection[str]) -> tuple[str, ...]:
    """`columns` (a table's task order) restricted to the task set `tasks`."""
    return tuple(c for c in columns if c in tasks)


def source_label(code: str, source: str) -> str:
    """Column name of a task's result on one source, e.g. "U2I[movielens]"."""
    return f"{code}[{source}]"


def metrics_json(results: Results) -> dict:
    """The reports/metrics.json object (module docstring)."""
    out: dict = {
        name: {task: result.to_json() for task, result in per_task.items()}
        for name, per_task in results.items()
    }
    tasks = evaluated_tasks(results)
    out["average_rank"] = {
        kind.value: {
            name: {"mean": rank.mean, "std": rank.std}
            for name, rank in average_ranks(results, present_columns(columns, tasks)).items()
        }
        for kind, columns in COLUMNS_BY_KIND.items()
        if present_columns(columns, tasks)
    }
    return out


def write_metrics(path: Path, results: Results) -> Path:
    """Write reports/metrics.json atomically (sorted keys, so diffs stay readable)."""
    with atomic_file(path) as handle:
        json.dump(metrics_json(results), handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def read_system_metrics(path: Path, cutoff: int) -> dict[str, TaskResult]:
    """One system's results from a JSON object {task code: {metric: value, "n": …}}.

    This is the format of reports/variants/<name>/metrics.json (what `recfound ablate` writes).
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(path, f"not readable JSON: {err}") from None
    if not isinstance(raw, dict):
        raise DataError(path, "expected an object {task code: {metric: value}}")
    results = {}
    for code, values in raw.items():
        if code not in BY_CODE or not isinstance(values, dict):
            raise DataError(path, f"entry {code!r}: not a task code with a metrics object")
        try:
            results[code] = TaskResult.from_json(BY_CODE[code], values, cutoff)
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(path, f"entry {code!r}: {err}") from None
    return results


def read_variants(variants_dir: Path, cutoff: int) -> Results:
    """Every reports/variants/<name>/metrics.json present, by variant name (sorted)."""
    if not variants_dir.is_dir():
        return {}
    return {
        path.parent.name: read_system_metrics(path, cutoff)
        for path in sorted(variants_dir.glob("*/metrics.json"))
    }


def _fmt(value: float) -> str:
    return f"{value:.3f}"


def _display(name: str) -> str:
    return DISPLAY_NAMES.get(name, name)


def score_table(
    results: Mapping[str, Mapping[str, TaskResult]],
    columns: Sequence[str],
    with_rank: bool = True,
) -> str:
    """Markdown table: one row per system that has any of `columns`, the best score of each
    column in bold, and "Average Rank: mean (std)" over those columns ("—" for systems not
    scored on all of them)."""
    rows = {name: res for name, res in results.items() if any(c in res for c in columns)}
    if not rows:
        return "_no results_\n"
    ranks = average_ranks(rows, columns)
    scores = {c: [res[c].score for res in rows.values() if c in res] for c in columns}
    # Bold marks a winner; a column where every system scores the same has none.
    best = {c: max(v) if len(set(v)) > 1 else None for c, v in scores.items()}
    header = ["Model", *columns] + (["Average Rank"] if with_rank else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, res in rows.items():
        cells = [_display(name)]
        for c in columns:
            if c not in res:
                cells.append(MISSING)
            elif res[c].score == best[c]:
                cells.append(f"**{_fmt(res[c].score)}**")
            else:
                cells.append(_fmt(res[c].score))
        if with_rank:
            rank = ranks.get(name)
            cells.append(f"{rank.mean:.2f} ({rank.std:.2f})" if rank else MISSING)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def count_table(results: Mapping[str, Mapping[str, TaskResult]], columns: Sequence[str]) -> str:
    """Markdown table of #invalid outputs / #test rows per generative task."""
    rows = {name: res for name, res in results.items() if any(c in res for c in columns)}
    if not rows:
        return "_no results_\n"
    header = ["Model", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, res in rows.items():
        cells = [_display(name)] + [
            f"{res[c].invalid}/{res[c].n}" if c in res and res[c].invalid is not None else MISSING
            for c in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def extra_metric_table(
    results: Mapping[str, Mapping[str, TaskResult]], columns: Sequence[str], key: str
) -> str:
    """Markdown table of a secondary metric (e.g. ROUGE-L_F1) where systems report it."""
    rows = {
        name: res
        for name, res in results.items()
        if any(c in res and key in res[c].metrics for c in columns)
    }
    if not rows:
        return "_no results_\n"
    header = ["Model", *columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, res in rows.items():
        cells = [_display(name)] + [
            _fmt(res[c].metrics[key]) if c in res and key in res[c].metrics else MISSING
            for c in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _metric_legend(cutoff: int, tasks: Collection[str]) -> str:
    parts = [f"{t.code} {t.metric}" for t in TASKS if t.code in tasks]
    return ", ".join(parts).replace("@20", f"@{cutoff}")


def _omitted(what: str, why: str) -> str:
    """The one-line note that stands in for a table the task set gives nothing to show."""
    return f"_{what} omitted: {why}._\n"


def per_source_results(
    results: Mapping[str, Mapping[str, TaskResult]],
) -> tuple[Results, tuple[str, ...], dict[str, int]]:
    """Results keyed by column for the per-source table: each task that has results per
    source appears as "U2I" (overall) followed by "U2I[<source>]" per source.

    Returns (system -> column -> result, the columns in task order, test rows per source
    column).
    """
    sources: dict[str, set[str]] = {}
    sizes: dict[str, int] = {}
    for per_task in results.values():
        for code, result in per_task.items():
            for source, part in result.by_source.items():
                sources.setdefault(code, set()).add(source)
                sizes.setdefault(source_label(code, source), part.n)
    columns: list[str] = []
    for task in TASKS:
        if task.code in sources:
            columns += [
                task.code,
                *(source_label(task.code, s) for s in sorted(sources[task.code])),
            ]
    flat: Results = {}
    for name, per_task in results.items():
        row = {code: r for code, r in per_task.items() if code in sources}
        for code, result in row.copy().items():
            row.update({source_label(code, s): part for s, part in result.by_source.items()})
        if row:
            flat[name] = row
    return flat, tuple(columns), {c: sizes[c] for c in columns if c in sizes}


def render_results(
    results: Results,
    variants: Results,
    cutoff: int,
    n_by_task: Mapping[str, int],
    stale: Sequence[str] = (),
) -> str:
    """reports/results.md: Tables 2 (generative), 3 (embedding), 4 (ablations), #invalid,
    ROUGE-L and, when some task's rows come from several sources, the results per source.

    The tables cover the tasks of `n_by_task` (test rows per task code: the evaluated task
    set); a table none of them belongs to is replaced by a one-line note. `stale` names
    variants left out because they ran with other settings than today's."""
    tasks = set(n_by_task)
    generative = present_columns(GENERATIVE_COLUMNS, tasks)
    embedding = present_columns(EMBEDDING_COLUMNS, tasks)
    text_columns = present_columns(TEXT_COLUMNS, tasks)
    ablation = {name: results[name] for name in ABLATION_ROWS if name in results}
    ablation.update({name: res for name, res in variants.items() if name not in ablation})
    missing_variants = [n for n in ABLATION_ROWS if n not in ablation and n not in stale]
    sizes = ", ".join(f"{code} {n}" for code, n in n_by_task.items())
    sections = [
        "# RecFound: results on the test split\n",
        "Written by `recfound stage evaluate` (DVC stage `evaluate`); numbers also in "
        "`reports/metrics.json`. Metrics: " + _metric_legend(cutoff, tasks) + ". "
        "Unparseable outputs count as wrong. Average Rank: rank per task among the rows of the "
        "table scored on all its tasks (1 = best, ties share the best rank), then mean "
        "(population std) over tasks; rows covering only some tasks are shown for reference.\n",
        f"Test rows per task: {sizes}.\n",
    ]
    if generative:
        sections += ["## Generative tasks (cf. paper Table 2)\n", score_table(results, generative)]
    else:
        sections.append(_omitted("Generative tasks (Table 2)", "no generative task in the data"))
    if embedding:
        sections += ["## Embedding tasks (cf. paper Table 3)\n", score_table(results, embedding)]
    else:
        sections.append(_omitted("Embedding tasks (Table 3)", "no embedding task in the data"))
    sections += [
        "## Ablations (cf. paper Table 4)\n",
        "Variants are compared without Model Merge, as in the paper; "
        "`recfound ablate` trains and evaluates them into `reports/variants/<name>/`.\n",
        score_table(ablation, generative + embedding),
    ]
    if missing_variants:
        names = ", ".join(f"`{n}`" for n in missing_variants)
        sections.append(f"Not run yet: {names} (`recfound ablate`).\n")
    if stale:
        names = ", ".join(f"`{n}`" for n in stale)
        sections.append(
            f"Left out, trained with other settings than params.yaml now holds: {names} "
            "(re-run `recfound ablate`).\n"
        )
    if generative:
        sections += [
            "## Invalid outputs (#invalid / #rows)\n",
            count_table({**results, **variants}, generative),
        ]
    else:
        sections.append(_omitted("Invalid outputs", "only generative tasks have answers to parse"))
    if text_columns:
        sections += [
            "## ROUGE-L F1 of the free-text tasks\n",
            extra_metric_table(results, text_columns, "ROUGE-L_F1"),
        ]
    else:
        sections.append(_omitted("ROUGE-L F1", f"no free-text task ({', '.join(TEXT_COLUMNS)})"))
    by_source, source_columns, source_sizes = per_source_results(results)
    if source_columns:
        counts = ", ".join(f"{c} {n}" for c, n in source_sizes.items())
        sections += [
            "## Results per source\n",
            "Tasks whose test rows come from several sources: the overall score, then the score "
            "on each source's rows alone (same answers, same metric). "
            f"Test rows per source: {counts}.\n",
            score_table(by_source, source_columns, with_rank=False),
        ]
    return "\n".join(sections)


def write_results(path: Path, text: str) -> Path:
    """Write reports/results.md atomically."""
    with atomic_file(path) as handle:
        handle.write(text)
    return path
