"""reports/metrics.json and comparisons.json (DVC metrics) and reports/results.md (the
paper's Tables 2–5, full-catalogue retrieval, paired comparisons, paper-comparable scores).

metrics.json is nested JSON that `dvc metrics show` / `dvc metrics diff` flatten:

    {"recfound": {"U2I": {"MRR@20": 0.41, "n": 16,
                          "ci": {"MRR@20": {"low": 0.27, "high": 0.56}}},
                  "QR": {"BERTScore_F1": …, "invalid": 0, "ci": {…}}, …},
     "no_merge": {…}, "base": {…}, "minilm": {…}, "popularity": {…}, "random": {…},
     "average_rank": {"generative": {"recfound": {"mean": 1.3, "std": 0.46}, …}, "embedding": …},
     "bootstrap": {"samples": 1000, "confidence": 0.95, "seed": 1234}}

`ci` holds each metric's bootstrap interval at `bootstrap.confidence`
(recfound.evaluate.bootstrap). A task whose test rows come from several sources also has,
beside its overall keys, `"sources": {"amazon_reviews": {"MRR@20": …, "n": …, "ci": …},
"movielens": {…}}` (recfound.evaluate.protocol); the overall keys stay where they were. An
embedding task's entry also holds its full-catalogue metrics, `"Recall@10_full"`,
`"NDCG@10_full"`, … with their `ci` (recfound.evaluate.full_catalogue). The field's
leave-one-out protocol has its own section, `"leave_one_out"` (recfound.evaluate.field_report).

comparisons.json: RecFound minus each other system on the same test rows, per task and metric,
with its paired bootstrap interval and `sign` (+1 the interval is above 0, −1 below, 0 it
contains 0): `{"reference": "recfound", "bootstrap": {…}, "differences": {"base": {"U2I":
{"MRR@20": {"value", "low", "high", "sign"}}}}, "left_out": {system: why}}`.

The tables cover the tasks evaluated (the task set of the dataset, any non-empty subset of the
13): a table with no task of its kind (e.g. Table 2 for an embedding-only dataset) is left out
with a one-line note, and so is its `average_rank` entry.

Average Rank (recfound.md §5): on each task the compared systems are ranked by their score
(1 = best; tied scores share the best of their ranks), then each system's ranks are averaged
over the tasks; std is the population standard deviation of those ranks. Only systems scored
on every task of a table are ranked (a popularity baseline that answers SR alone is not).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import rankdata

from recfound.atomic import atomic_file
from recfound.errors import DataError
from recfound.evaluate import answer_modes
from recfound.evaluate.bootstrap import (
    BootstrapSettings,
    Comparisons,
    Difference,
    paired_differences,
    stream,
)
from recfound.evaluate.protocol import (
    FULL_SUFFIX,
    TaskResult,
    authors_metric,
    full_catalogue_metrics,
)
from recfound.outputs import METRICS_FILE
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
    "recfound+prior": "RecFound + popularity prior",  # recfound.evaluate.popularity_prior
    "random": "Random",
    "ease": "EASE (ID-based)",  # the leave-one-out protocol's (recfound.evaluate.id_baselines)
    "sasrec": "SASRec (ID-based, full softmax)",
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
# Marks a variant row trained unlike this run (another dtype): listed, not paired.
UNLIKE_MARK = "†"
# Scores with three decimals, interval ends and differences with two: `.202 [.18, .23]`.
SCORE_DIGITS = 3
INTERVAL_DIGITS = 2
# How a paired difference's interval reads (Difference.sign): above 0, below 0, contains 0.
MARKS: dict[int, str] = {1: "▲", -1: "▼", 0: "·"}
# Tasks the authors' scorer reads differently from ours (recfound.evaluate.metrics `authors_*`).
AUTHORS_SCORED: tuple[str, ...] = ("AVE", "SA", "PRP")

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


def metrics_json(
    results: Results,
    settings: BootstrapSettings | None = None,
    sections: Mapping[str, Any] | None = None,
) -> dict:
    """The reports/metrics.json object (module docstring); `bootstrap` records `settings`;
    `sections` are added as they are (e.g. recfound.evaluate.field_report's)."""
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
    if settings is not None:
        out["bootstrap"] = settings.to_json()
    out.update(sections or {})
    return out


def write_metrics(
    path: Path,
    results: Results,
    settings: BootstrapSettings | None = None,
    sections: Mapping[str, Any] | None = None,
) -> Path:
    """Write reports/metrics.json atomically (sorted keys, so diffs stay readable)."""
    with atomic_file(path) as handle:
        json.dump(metrics_json(results, settings, sections), handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def write_comparisons(
    path: Path, comparisons: Comparisons, sections: Mapping[str, Any] | None = None
) -> Path:
    """Write reports/comparisons.json atomically (module docstring), `sections` added."""
    with atomic_file(path) as handle:
        json.dump({**comparisons.to_json(), **(sections or {})}, handle, indent=2, sort_keys=True)
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
        for path in sorted(variants_dir.glob(f"*/{METRICS_FILE}"))
    }


def _short(value: float, digits: int, signed: bool = False) -> str:
    """`value` as the paper's tables write it, without a leading zero: .202, -.05, +.12, 1.000."""
    text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return re.sub(r"^([+-]?)0\.", r"\1.", text)


def _fmt(value: float) -> str:
    return _short(value, SCORE_DIGITS)


def _score_cell(result: TaskResult, key: str, bold: bool = False) -> str:
    """A score and, when computed, its interval: `.202 [.18, .23]` (bold marks the value)."""
    value = _fmt(result.metrics[key])
    cell = f"**{value}**" if bold else value
    interval = result.intervals.get(key)
    if interval is None:
        return cell
    low, high = (_short(x, INTERVAL_DIGITS) for x in (interval.low, interval.high))
    return f"{cell} [{low}, {high}]"


def _display(name: str) -> str:
    system, mode = answer_modes.split_mode_name(name)
    if mode != answer_modes.FREE:
        return f"{DISPLAY_NAMES.get(system, system)}, {answer_modes.MODE_TITLES[mode]}"
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
            else:
                cells.append(_score_cell(res[c], res[c].primary, bold=res[c].score == best[c]))
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
    return keyed_table(results, [(c, c, key) for c in columns])


def keyed_table(
    results: Mapping[str, Mapping[str, TaskResult]], columns: Sequence[tuple[str, str, str]]
) -> str:
    """Markdown table whose columns are (header, task code, metric key): one row per system
    that reports any of them, each cell the score with its interval."""

    def reports(res: Mapping[str, TaskResult], code: str, key: str) -> bool:
        return code in res and key in res[code].metrics

    rows = {
        name: res
        for name, res in results.items()
        if any(reports(res, code, key) for _, code, key in columns)
    }
    if not rows:
        return "_no results_\n"
    header = ["Model", *(title for title, _, _ in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, res in rows.items():
        cells = [_display(name)] + [
            _score_cell(res[code], key) if reports(res, code, key) else MISSING
            for _, code, key in columns
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def authors_table(results: Mapping[str, Mapping[str, TaskResult]], tasks: Collection[str]) -> str:
    """AVE, SA, PRP (those in `tasks`) scored our way and the authors' way, side by side."""
    primary = {code: r.primary for per_task in results.values() for code, r in per_task.items()}
    columns = []
    for code in present_columns(AUTHORS_SCORED, tasks):
        key = primary[code]
        columns += [(f"{code} {key}", code, key), (f"{code} (authors)", code, authors_metric(key))]
    return keyed_table(results, columns)


def comparison_table(
    comparisons: Comparisons, primary: Mapping[str, str], columns: Sequence[str]
) -> str:
    """The reference minus each paired system on `columns` (task codes; `primary` metric of each):
    `+.12 [+.03, +.21] ▲` per cell, and how many differences are above, below and around 0."""
    return keyed_comparison_table(comparisons, [(c, c, primary[c]) for c in columns])


def keyed_comparison_table(
    comparisons: Comparisons, columns: Sequence[tuple[str, str, str]]
) -> str:
    """`comparison_table` whose columns are (header, task code, metric key): one row per
    paired system that has any of them."""

    def difference(
        per_task: Mapping[str, Mapping[str, Difference]], code: str, key: str
    ) -> Difference | None:
        return per_task[code].get(key) if code in per_task else None

    rows = {
        name: per_task
        for name, per_task in comparisons.differences.items()
        if any(difference(per_task, code, key) is not None for _, code, key in columns)
    }
    if not rows:
        return "_no paired results_\n"
    header = [f"{_display(comparisons.reference)} vs", *(title for title, _, _ in columns)]
    header.append("Summary")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, per_task in rows.items():
        diffs = [difference(per_task, code, key) for _, code, key in columns]
        cells = [_display(name)] + [
            MISSING if d is None else _difference_cell(d.value, d.low, d.high, d.sign)
            for d in diffs
        ]
        signs = [d.sign for d in diffs if d is not None]
        cells.append(" ".join(f"{signs.count(sign)}{mark}" for sign, mark in MARKS.items()))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _difference_cell(value: float, low: float, high: float, sign: int) -> str:
    ends = ", ".join(_short(x, INTERVAL_DIGITS, signed=True) for x in (low, high))
    return f"{_short(value, INTERVAL_DIGITS, signed=True)} [{ends}] {MARKS[sign]}"


def full_catalogue_ks(results: Mapping[str, Mapping[str, TaskResult]]) -> list[int]:
    """Every k some result has full-catalogue metrics of (`Recall@k_full`), ascending."""
    pattern = re.compile(rf"^Recall@(\d+){FULL_SUFFIX}$")
    return sorted(
        {
            int(match.group(1))
            for per_task in results.values()
            for result in per_task.values()
            for key in result.metrics
            if (match := pattern.match(key))
        }
    )


def full_catalogue_columns(k: int, codes: Sequence[str]) -> list[tuple[str, str, str]]:
    """(header, task code, metric key) of the full-catalogue Recall@k and NDCG@k of `codes`."""
    columns = []
    for code in codes:
        recall, ndcg = full_catalogue_metrics(k)
        columns += [(f"{code} Recall@{k}", code, recall), (f"{code} NDCG@{k}", code, ndcg)]
    return columns


FULL_CATALOGUE_NOTE = (
    "Beside the sampled metrics of Table 3 (the positive ranked among the row's own sampled "
    "negatives), each embedding test row's query searched against the whole catalogue: the "
    "items the row must not return skipped (U2I: what the user had before the target; I2I: "
    "the query item), the top k scored against the row's positives. Recall@k: the share of "
    "the positives among them; NDCG@k: binary-relevance NDCG. RecFound searches the index the "
    "`index` stage built with the merged model; the base model and MiniLM embed the catalogue "
    "during `evaluate` (exact search); popularity ranks it by training target counts (U2I "
    "only). Same test rows as Table 3, intervals alike.\n"
)


def _full_catalogue_sections(
    results: Mapping[str, Mapping[str, TaskResult]], embedding: Sequence[str]
) -> list[str]:
    """The full-catalogue retrieval section: one table per k; none when no result has them."""
    ks = full_catalogue_ks(results)
    if not ks or not embedding:
        return []
    sections = ["## Full-catalogue retrieval (embedding tasks)\n", FULL_CATALOGUE_NOTE]
    for k in ks:
        sections += [f"### k = {k}\n", keyed_table(results, full_catalogue_columns(k, embedding))]
    return sections


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
    comparisons: Comparisons | None = None,
    unlike: Mapping[str, str] | None = None,
) -> str:
    """reports/results.md: Tables 2 (generative), 3 (embedding), 4 (ablations), the paired
    comparisons with RecFound, #invalid, ROUGE-L, the paper-comparable (authors') scores and,
    when some task's rows come from several sources, the results per source.

    The tables cover the tasks of `n_by_task` (test rows per task code: the evaluated task
    set); a table none of them belongs to is replaced by a one-line note. `stale` names
    variants left out because they ran with other settings than today's; `unlike` the variants
    kept but trained unlike this run, with why (recfound.evaluate.variants `unlike_this_run`):
    their rows are marked `UNLIKE_MARK` with a note, and `comparisons` should not pair them
    (`set_aside`). Without `comparisons` (no bootstrap) the paired table and the interval
    legend are left out."""
    unlike = unlike or {}
    results, by_mode = split_answer_modes(results)  # the paper's tables: free generation only
    if comparisons is not None:
        comparisons = dataclasses.replace(
            comparisons,
            differences={n: d for n, d in comparisons.differences.items() if n not in by_mode},
        )
    ran = set(results) | set(variants) | set(stale)
    missing_variants = [n for n in ABLATION_ROWS if n not in ran]
    variants = {_marked(name, unlike): res for name, res in variants.items()}
    tasks = set(n_by_task)
    generative = present_columns(GENERATIVE_COLUMNS, tasks)
    embedding = present_columns(EMBEDDING_COLUMNS, tasks)
    text_columns = present_columns(TEXT_COLUMNS, tasks)
    ablation = {name: results[name] for name in ABLATION_ROWS if name in results}
    ablation.update({name: res for name, res in variants.items() if name not in ablation})
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
    if comparisons is not None:
        sections.append(_interval_legend(comparisons.settings))
    if generative:
        sections += ["## Generative tasks (cf. paper Table 2)\n", score_table(results, generative)]
    else:
        sections.append(_omitted("Generative tasks (Table 2)", "no generative task in the data"))
    if embedding:
        sections += ["## Embedding tasks (cf. paper Table 3)\n", score_table(results, embedding)]
    else:
        sections.append(_omitted("Embedding tasks (Table 3)", "no embedding task in the data"))
    sections += _full_catalogue_sections(results, embedding)
    sections += [
        "## Ablations (cf. paper Table 4)\n",
        "Variants are compared without Model Merge, as in the paper; "
        "`recfound ablate` trains and evaluates them into `reports/variants/<name>/`.\n",
        score_table(ablation, generative + embedding),
    ]
    if missing_variants:
        names = ", ".join(f"`{n}`" for n in missing_variants)
        sections.append(f"Not run yet: {names} (`recfound ablate`).\n")
    sections += _unlike_notes(unlike)
    if stale:
        names = ", ".join(f"`{n}`" for n in stale)
        sections.append(
            f"Left out, trained with other settings than params.yaml now holds: {names} "
            "(re-run `recfound ablate`).\n"
        )
    if comparisons is not None:
        sections += _comparison_sections(comparisons, results, generative, embedding, n_by_task)
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
    if present_columns(AUTHORS_SCORED, tasks):
        sections += [
            "## Paper-comparable scores (the authors' scorer)\n",
            AUTHORS_NOTE,
            authors_table({**results, **variants}, tasks),
        ]
    sections += answer_mode_sections(by_mode, results, comparisons)
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


def _marked(name: str, unlike: Mapping[str, str]) -> str:
    """A variant's row name, marked when it ran unlike this run."""
    return f"{_display(name)} {UNLIKE_MARK}" if name in unlike else name


def _unlike_notes(unlike: Mapping[str, str]) -> list[str]:
    """One note per reason the `unlike` variants were trained unlike this run."""
    by_reason: dict[str, list[str]] = {}
    for name, why in unlike.items():
        by_reason.setdefault(why, []).append(f"`{name}`")
    return [
        f"{UNLIKE_MARK} {why}: {', '.join(names)}. Not paired with "
        f"{_display('recfound')}: a difference would mix the ablation with the dtype; "
        "re-run `recfound ablate` here to compare them.\n"
        for why, names in by_reason.items()
    ]


AUTHORS_NOTE = (
    "The same answers scored as the authors' code scores them (JunkFood436/RecFound, "
    "scripts/eval.py), for comparison with the paper; the tables above use ours. AVE: the "
    "authors count every prediction once per label of its row and every (label, prediction) "
    "pair that matches, case-sensitively, so 3 correct predictions of 3 labels score F1 .50 "
    "there and 1.0 here. SA/PRP: the answer is the output's first character if it is A–E; "
    "anything else is replaced by a wrong letter (A, or B when the reference is A), a false "
    "positive of that letter, where ours only misses the reference class.\n"
)


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _interval_legend(settings: BootstrapSettings) -> str:
    return (
        f"Each score is followed by its {_percent(settings.confidence)} bootstrap interval "
        f"[low, high]: the percentile interval of the metric over {settings.samples} "
        f"resamples of the task's test rows (drawn with replacement, seed {settings.seed}). "
        "Few test rows give wide intervals.\n"
    )


def _comparison_sections(
    comparisons: Comparisons,
    results: Mapping[str, Mapping[str, TaskResult]],
    generative: Sequence[str],
    embedding: Sequence[str],
    n_by_task: Mapping[str, int],
) -> list[str]:
    """The "RecFound vs …" tables (one per kind of task present) and their explanation."""
    reference = results.get(comparisons.reference, {})
    primary = {code: result.primary for code, result in reference.items()}
    settings = comparisons.settings
    fewest = min(n_by_task.values()) if n_by_task else 0
    sections = [
        f"## {_display(comparisons.reference)} vs each other system (paired bootstrap)\n",
        f"Each cell: {_display(comparisons.reference)}'s score minus the row system's on the "
        f"same test rows, and the {_percent(settings.confidence)} interval of that difference over "
        f"{settings.samples} resamples that draw the same rows for both systems. "
        f"▲: the interval lies above 0, {_display(comparisons.reference)} is better; ▼: below "
        "0, it is worse; ·: the interval contains 0, inconclusive — not evidence that the two "
        f"are equal: with {fewest} test row{'' if fewest == 1 else 's'} on the smallest task "
        "only large gaps exclude 0. "
        "Summary: how many tasks of the row fall in each case.\n",
    ]
    for title, columns in (("Generative tasks", generative), ("Embedding tasks", embedding)):
        columns = [c for c in columns if c in primary]
        if columns:
            sections += [f"### {title}\n", comparison_table(comparisons, primary, columns)]
    full = [c for c in embedding if c in primary]
    for k in full_catalogue_ks({comparisons.reference: reference}) if full else []:
        sections += [
            f"### Full-catalogue retrieval, k = {k}\n",
            keyed_comparison_table(comparisons, full_catalogue_columns(k, full)),
        ]
    if comparisons.left_out:
        names = "; ".join(f"`{name}`: {why}" for name, why in comparisons.left_out.items())
        sections.append(
            f"Not compared: {names}. A variant is paired only with per-row statistics, on the "
            "test rows of the current run, under its dtype (re-run `recfound ablate`); without "
            "statistics its scores show no interval either.\n"
        )
    return sections


def split_answer_modes(results: Results) -> tuple[Results, Results]:
    """(free-generation results, the other answer modes' `name@mode` results)."""
    free, modes = {}, {}
    for name, per_task in results.items():
        is_mode = answer_modes.split_mode_name(name)[1] != answer_modes.FREE
        (modes if is_mode else free)[name] = per_task
    return free, modes


def answer_mode_sections(
    by_mode: Results, free: Results, comparisons: Comparisons | None
) -> list[str]:
    """The label tasks answered in every mode (recfound.evaluate.answer_modes): each system's
    free answers and its other modes with intervals, then each mode minus the same system's
    free answers on the same rows (paired bootstrap, when `comparisons` brings its settings).
    Nothing when no mode ran."""
    if not by_mode:
        return []
    columns = [c for c in answer_modes.LABEL_TASKS if any(c in r for r in by_mode.values())]
    rows: Results = {}
    for name in by_mode:
        system = answer_modes.split_mode_name(name)[0]
        if system in free and system not in rows:
            rows[system] = {c: free[system][c] for c in columns if c in free[system]}
        rows[name] = by_mode[name]
    ordered = sorted(rows, key=lambda n: answer_modes.split_mode_name(n)[0])
    sections = [
        "## Answer modes of the label tasks\n",
        "Free generation (the rows above) is the paper's answer; the same model also answered "
        "each label task by choosing among the row's options: the option whose label (letter, "
        "yes/no) it finds likeliest after the prompt, the option whose listed text (SR: the "
        "candidate's title) it finds likeliest per token, and for SR the candidate closest to "
        "the history embedded as a U2I query (docs/evaluation.md, answer modes). Same test "
        "rows and metrics as Table 2.\n",
        score_table({n: rows[n] for n in ordered}, columns, with_rank=False),
    ]
    if comparisons is None:
        return sections
    lines = []
    for name in ordered:
        system, mode = answer_modes.split_mode_name(name)
        if mode == answer_modes.FREE or system not in free:
            continue
        cells = [_display(name)]
        for code in columns:
            ours, theirs = by_mode[name].get(code), free[system].get(code)
            if ours is None or theirs is None or ours.evidence is None or theirs.evidence is None:
                cells.append(MISSING)
                continue
            diff = paired_differences(
                ours.evidence, theirs.evidence, comparisons.settings, stream(code)
            )[ours.primary]
            cells.append(_difference_cell(diff.value, diff.low, diff.high, diff.sign))
        lines.append("| " + " | ".join(cells) + " |")
    if lines:
        header = ["Mode minus the same system's free answer", *columns]
        sections += [
            "Each mode's score minus its system's free-generation score, with the paired "
            "interval (▲ the mode is better, ▼ worse, · inconclusive):\n",
            "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *lines])
            + "\n",
        ]
    return sections


def write_results(path: Path, text: str) -> Path:
    """Write reports/results.md atomically."""
    with atomic_file(path) as handle:
        handle.write(text)
    return path
