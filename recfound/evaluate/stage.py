"""DVC stage `evaluate`: every compared system on the TEST split -> metrics, tables, figures.

Systems: RecFound (base + merged adapter), RecFound w/o Model Merge (base + the final training
adapter), and the baselines in `evaluate.baselines` (recfound.evaluate.baselines) that apply to
the task set (MiniLM needs an embedding task, popularity SR or U2I). Ablation variants that
`recfound ablate` wrote to reports/variants/<name>/metrics.json join the tables.

The embedding tasks are also scored over the whole catalogue (Recall@k / NDCG@k for each k of
`evaluate.catalogue_k`, recfound.evaluate.full_catalogue): RecFound searches the index the
`index` stage wrote (paths.index), base and MiniLM embed the catalogue here, popularity ranks it
by training target counts. And every user is scored in the field's protocol (leave-one-out by
time, full ranking, HR@k / NDCG@k: recfound.evaluate.leave_one_out) beside ID-based
popularity, EASE and SASRec, in its own section of metrics.json, comparisons.json, results.md.

The tasks evaluated are the task set of the dataset (recfound.data.unified.present_tasks: the
tasks with training rows, any non-empty subset of the 13) that have test rows.

Outputs under `paths.reports`:
    headline/<task>.json    the task's primary metric and interval per system: what
                            `dvc metrics show` prints (recfound.evaluate.headline)
    metrics.json            per system and task, and per source where a task's test rows
                            come from several, each metric with its bootstrap interval
                            (recfound.evaluate.report)
    comparisons.json        RecFound minus every other system and current variant, per task
                            and metric, with paired bootstrap intervals
    evidence/<system>.json  the per-row statistics behind every score (recfound.evaluate.bootstrap)
    results.md              the paper's Tables 2-4 + #invalid + ROUGE-L (+ per source), the
                            full-catalogue retrieval table, the paired comparisons and the
                            paper-comparable (authors') scores
    figures/                routing_similarity.png (Figure 2), sample_ratios.png (Figure 3)
    learning_curve.csv      a validation metric of `evaluate.curve_tasks` at every saved
                            checkpoint (DVC plot; recfound.evaluate.curve)
    predictions/<system>.jsonl   every generated answer, whether it parsed, and its reference

RecFound and the base model also answer the label tasks in the other modes of
`evaluate.answer_modes` (recfound.evaluate.answer_modes): each mode is a system `name@mode` in
metrics.json, comparisons.json, evidence/ and predictions/, and a section of results.md.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recfound.atomic import atomic_dir
from recfound.config import Config
from recfound.data.unified import load_unified, present_tasks
from recfound.errors import DataError, RecFoundError
from recfound.evaluate import (
    answer_modes,
    bootstrap,
    curve,
    field_report,
    figures,
    popularity_prior,
    report,
)
from recfound.evaluate.full_catalogue import FullCatalogue
from recfound.evaluate.headline import write_headline
from recfound.evaluate.leave_one_out import FieldRun
from recfound.evaluate.metrics import BertScoreF1, PairScorer
from recfound.evaluate.popularity_prior import PriorRun
from recfound.evaluate.protocol import SystemRun, evaluate_system, rows_by_task
from recfound.evaluate.systems import LLMSystem, Row, System, answer_budgets
from recfound.evaluate.variants import current_variants, set_aside, unlike_this_run
from recfound.merge.layout import merged_adapter_dir
from recfound.outputs import (
    COMPARISONS_FILE,
    EVIDENCE_DIR,
    FIGURES_DIR,
    HEADLINE_DIR,
    METRICS_FILE,
    PREDICTIONS_DIR,
    RESULTS_FILE,
    VARIANTS_DIR,
)
from recfound.tasks import Task

# The system every other one is compared with, pairwise (comparisons.json, results.md).
REFERENCE_SYSTEM = "recfound"
# Baselines with full-catalogue metrics besides base (recfound.evaluate.full_catalogue says why
# RecFound w/o Model Merge and random have none).
FULL_CATALOGUE_BASELINES = ("minilm", "popularity")
# Columns the popularity and random baselines and the answer budgets read from the TRAIN split.
_TRAIN_COLUMNS = ["task", "kind", "output", "options", "option_ids", "positive_ids"]


@dataclass(frozen=True)
class EvalData:
    """What evaluation reads of the unified dataset."""

    tasks: tuple[Task, ...]  # the task set: tasks with training rows
    test: dict[str, list[Row]]  # test rows of those tasks, by code (tasks without any left out)
    train: list[Row]  # the train columns the baselines and answer budgets need


def load_splits(cfg: Config) -> EvalData:
    """The task set, its test rows grouped by task, and the train columns the baselines need.

    A task of the set without test rows is named and skipped; none with test rows at all is a
    DataError.
    """
    path = Path(cfg.paths.unified)
    dataset = load_unified(path, ("train", "test"))
    tasks = present_tasks(dataset)
    if not tasks:
        raise DataError(path / "train", "no training rows of any task")
    test = rows_by_task(dataset["test"].to_list(), tasks)
    if not test:
        codes = ", ".join(t.code for t in tasks)
        raise DataError(path / "test", f"no test rows of any task of the task set ({codes})")
    untested = [t.code for t in tasks if t.code not in test]
    if untested:
        print(f"not evaluated, no test rows: {', '.join(untested)}")
    train = dataset["train"].select_columns(_TRAIN_COLUMNS).to_list()
    return EvalData(tasks, test, train)


def text_scorer(cfg: Config) -> PairScorer:
    """BERTScore F1 with the configured local encoder (loaded on first use)."""
    from recfound.evaluate.baselines import resolve_text_encoder
    from recfound.model.inference import default_device

    return BertScoreF1(
        str(resolve_text_encoder(cfg.evaluate.text_encoder)),
        cfg.evaluate.bertscore_layers,
        cfg.evaluate.encoder_batch_size,
        str(default_device()),
    )


def evaluate_llm(
    cfg: Config,
    name: str,
    adapter_dir: Path | None,
    test: dict[str, list[Row]],
    train: list[Row],
    scorer: PairScorer,
    catalogue: FullCatalogue | None = None,
    saved_index: bool = False,
    field: FieldRun | None = None,
    modes: dict[str, SystemRun] | None = None,
    prior: PriorRun | None = None,
) -> tuple[SystemRun, Any]:
    """Load base (+ adapter) as a Predictor and evaluate it as system `name`; returns the run
    and the adapter.

    `train` rows set each task's generation budget (`answer_budgets`); they are never scored.
    With `catalogue`, the embedding tasks also get full-catalogue metrics while the model is
    loaded, searching the index stage's index when `saved_index`, else one embedded here;
    with `field`, its test users are scored in the leave-one-out protocol the same way.
    With `modes`, the runs of the system's other answer modes (`evaluate.answer_modes`,
    recfound.evaluate.answer_modes) are added to it under `name@mode`. With `prior`, the
    system with a popularity prior fused into its U2I scores is evaluated too
    (recfound.evaluate.popularity_prior).
    """
    from recfound.model.predictor import Predictor

    if adapter_dir is not None and not Path(adapter_dir).is_dir():
        raise RecFoundError(f"{adapter_dir}: adapter not found (run the train/merge stages)")
    predictor = Predictor.load(cfg, cfg.paths.base_model, adapter_dir)
    budgets = answer_budgets(
        train,
        predictor.tokenizer,
        cfg.evaluate.answer_margin_tokens,
        cfg.evaluate.max_new_tokens,
    )
    system = LLMSystem(name, predictor, budgets)
    if catalogue is not None:
        catalogue.share_vectors(system, saved_index)
    run = evaluate_system(system, test, scorer, cfg.evaluate.rank_cutoff, cfg.paths.unified)
    if catalogue is not None:
        catalogue.add_metrics(run, system, test, saved_index)
    if field is not None:
        field.add_llm(system, catalogue, saved_index)
    if prior is not None:
        prior.add(system, test, scorer)
    if modes is not None:
        passages = answer_modes.catalogue_passages(cfg.paths.unified)
        modes.update(
            answer_modes.evaluate_modes(
                system,
                cfg.evaluate.answer_modes,
                test,
                scorer,
                cfg.evaluate.rank_cutoff,
                cfg.paths.unified,
                passages,
            )
        )
    return run, predictor.model.adapter


def baseline_systems(cfg: Config, train: list[Row], tasks: Sequence[Task]) -> list[System]:
    """The non-LLM baselines named in `evaluate.baselines` ("base" is evaluated separately)
    that answer at least one of `tasks`; the others are named and skipped (MiniLM on a
    dataset without embedding tasks would load an encoder for nothing)."""
    from recfound.evaluate.baselines import (
        MiniLMSystem,
        PopularitySystem,
        RandomSystem,
        resolve_text_encoder,
    )

    codes = {task.code for task in tasks}
    applies = {
        "minilm": any(task.is_embedding for task in tasks),
        "popularity": bool(codes & set(PopularitySystem.tasks)),
    }
    systems: list[System] = []
    for name in cfg.evaluate.baselines:
        if not applies.get(name, True):
            print(f"baseline {name} skipped: it answers none of {', '.join(sorted(codes))}")
        elif name == "minilm":
            encoder = resolve_text_encoder(cfg.evaluate.text_encoder)
            systems.append(MiniLMSystem(encoder, cfg.evaluate.encoder_batch_size))
        elif name == "popularity":
            systems.append(PopularitySystem(train, cfg.seed))
        elif name == "random":
            systems.append(RandomSystem(train, cfg.seed))
    return systems


def write_predictions(out_dir: Path, runs: dict[str, SystemRun]) -> Path:
    """predictions/<system>.jsonl: one {"task", "id", "output", "valid", "reference"} per row."""
    with atomic_dir(out_dir) as tmp:
        for name, run in runs.items():
            if not run.generations:
                continue
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as handle:
                for task, records in run.generations.items():
                    for record in records:
                        handle.write(json.dumps({"task": task, **record}, ensure_ascii=False))
                        handle.write("\n")
    return out_dir


def write_figures(cfg: Config, out_dir: Path, adapter: Any, tasks: Sequence[Task]) -> list[Path]:
    """Figure 2 from the merged adapter (TMoLE only) over the task set `tasks`, and Figure 3
    from the training log."""
    from recfound.model.adapters import TMoLEAdapter
    from recfound.train.metrics_log import RATIO_CSV

    written = []
    with atomic_dir(out_dir) as tmp:
        if isinstance(adapter, TMoLEAdapter):
            codes, similarity = figures.adapter_routing_similarity(adapter, tasks)
            figures.plot_routing_similarity(codes, similarity, tmp / figures.ROUTING_FIGURE)
            written.append(out_dir / figures.ROUTING_FIGURE)
        else:
            print("routing-similarity figure skipped: the adapter is not TMoLE (no routing)")
        series = figures.read_ratio_csv(Path(cfg.paths.train_metrics) / RATIO_CSV)
        figures.plot_sample_ratios(series, tmp / figures.RATIO_FIGURE)
        written.append(out_dir / figures.RATIO_FIGURE)
    return written


def run(cfg: Config) -> None:
    """Stage entry point: `evaluate_all` with BERTScore on the configured local encoder."""
    evaluate_all(cfg, text_scorer(cfg))


def evaluate_all(cfg: Config, scorer: PairScorer) -> None:
    """Evaluate every system on the test split; write metrics, tables, figures, predictions.

    `scorer` rates free-text answers against references (BERTScore F1 in the stage).
    """
    data = load_splits(cfg)
    test, train = data.test, data.train
    reports = Path(cfg.paths.reports)
    catalogue = FullCatalogue.prepare(cfg, test)
    field = FieldRun.prepare(cfg)
    prior = PriorRun.prepare(
        cfg.evaluate.popularity_prior_weights,
        Path(cfg.paths.unified),
        train,
        test,
        cfg.evaluate.rank_cutoff,
    )
    runs: dict[str, SystemRun] = {}
    mode_runs: dict[str, SystemRun] = {}  # name@mode: answer modes beside free generation
    merged = merged_adapter_dir(cfg)
    runs["recfound"], merged_adapter = evaluate_llm(
        cfg,
        "recfound",
        merged,
        test,
        train,
        scorer,
        catalogue,
        saved_index=True,
        field=field,
        modes=mode_runs,
        prior=prior,
    )
    figure_paths = write_figures(cfg, reports / FIGURES_DIR, merged_adapter, data.tasks)
    del merged_adapter
    runs["no_merge"], _ = evaluate_llm(
        cfg, "no_merge", Path(cfg.paths.adapter), test, train, scorer
    )
    if "base" in cfg.evaluate.baselines:
        runs["base"], _ = evaluate_llm(
            cfg, "base", None, test, train, scorer, catalogue, field=field, modes=mode_runs
        )
    for system in baseline_systems(cfg, train, data.tasks):
        if catalogue is not None and system.name in FULL_CATALOGUE_BASELINES:
            catalogue.share_vectors(system)
        runs[system.name] = evaluate_system(
            system, test, scorer, cfg.evaluate.rank_cutoff, cfg.paths.unified
        )
        if catalogue is not None and system.name in FULL_CATALOGUE_BASELINES:
            catalogue.add_metrics(runs[system.name], system, test)
        if field is not None and system.name == "minilm":
            field.add_llm(system, catalogue, saved_index=False)
    if field is not None:
        field.add_id_models()
    runs.update(mode_runs)
    if prior is not None:
        runs.update(prior.runs)
    settings = bootstrap.BootstrapSettings.from_config(cfg)
    results = bootstrap.attach_intervals({name: r.results for name, r in runs.items()}, settings)
    variants, stale = current_variants(cfg, reports / VARIANTS_DIR)
    unlike = unlike_this_run(cfg, reports / VARIANTS_DIR, variants)  # another dtype: not paired
    variants = bootstrap.attach_intervals(variants, settings)
    comparisons = bootstrap.compare_systems(results | variants, REFERENCE_SYSTEM, settings)
    comparisons = set_aside(comparisons, unlike)
    loo = field_report.finish(field, settings, REFERENCE_SYSTEM) if field is not None else None
    sizes = {code: len(rows) for code, rows in test.items()}
    report.write_metrics(
        reports / METRICS_FILE, results, settings, field_report.metrics_section(loo)
    )
    headline_systems = [REFERENCE_SYSTEM, *cfg.evaluate.baselines]
    write_headline(reports / HEADLINE_DIR, results, headline_systems)
    report.write_comparisons(
        reports / COMPARISONS_FILE, comparisons, field_report.comparisons_section(loo)
    )
    bootstrap.write_evidence(reports / EVIDENCE_DIR, results)
    report.write_results(
        reports / RESULTS_FILE,
        report.render_results(
            results, variants, cfg.evaluate.rank_cutoff, sizes, stale, comparisons, unlike
        )
        + popularity_prior.render(prior, results, settings)
        + field_report.render(loo),
    )
    write_predictions(reports / PREDICTIONS_DIR, runs)
    curve_path = curve.learning_curve(cfg, scorer)
    print(f"headline (DVC metrics): {reports / HEADLINE_DIR}/<task>.json")
    print(f"metrics: {reports / METRICS_FILE} (paired comparisons: {reports / COMPARISONS_FILE})")
    print(f"tables: {reports / RESULTS_FILE}")
    for path in figure_paths:
        print(f"figure: {path}")
    if curve_path is not None:
        print(f"learning curve: {curve_path}")
    print(f"generations: {reports / PREDICTIONS_DIR}/<system>.jsonl")
