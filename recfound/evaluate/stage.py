"""DVC stage `evaluate`: every compared system on the TEST split -> metrics, tables, figures.

Systems: RecFound (base + merged adapter), RecFound w/o Model Merge (base + the final training
adapter), and the baselines in `evaluate.baselines` (recfound.evaluate.baselines). Ablation
variants that `recfound ablate` wrote to reports/variants/<name>/metrics.json join the tables.

Outputs under `paths.reports`:
    metrics.json            per system and task (DVC metrics; recfound.evaluate.report)
    results.md              the paper's Tables 2-4 + #invalid + ROUGE-L
    figures/                routing_similarity.png (Figure 2), sample_ratios.png (Figure 3)
    predictions/<system>.jsonl   every generated answer, whether it parsed, and its reference
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from recfound.atomic import atomic_dir
from recfound.config import Config
from recfound.errors import DataError, RecFoundError
from recfound.evaluate import ablate, figures, report
from recfound.evaluate.metrics import BertScoreF1, PairScorer
from recfound.evaluate.protocol import SystemRun, evaluate_system, rows_by_task
from recfound.evaluate.systems import LLMSystem, Row, System, answer_budgets
from recfound.merge.stage import MERGED_ADAPTER_DIR

METRICS_FILE = "metrics.json"
RESULTS_FILE = "results.md"
FIGURES_DIR = "figures"
PREDICTIONS_DIR = "predictions"
VARIANTS_DIR = "variants"
# Columns the popularity and random baselines and the answer budgets read from the TRAIN split.
_TRAIN_COLUMNS = ["task", "kind", "output", "options", "option_ids", "positive_ids"]


def load_splits(cfg: Config) -> tuple[dict[str, list[Row]], list[Row]]:
    """Test rows grouped by task, and the train columns the baselines need."""
    import datasets

    path = Path(cfg.paths.unified)
    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise DataError(path, "no unified dataset here; run `recfound stage build`") from None
    for split in ("train", "test"):
        if split not in dataset:
            raise DataError(path, f"missing split {split!r}")
    test = rows_by_task(dataset["test"].to_list())
    if not test:
        raise DataError(path / "test", "the test split is empty")
    train = dataset["train"].select_columns(_TRAIN_COLUMNS).to_list()
    return test, train


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
) -> tuple[SystemRun, Any]:
    """Load base (+ adapter) and evaluate it as system `name`; returns the run and the adapter.

    `train` rows set each task's generation budget (`answer_budgets`); they are never scored.
    """
    from recfound.model.inference import load_recfound

    if adapter_dir is not None and not Path(adapter_dir).is_dir():
        raise RecFoundError(f"{adapter_dir}: adapter not found (run the train/merge stages)")
    model, tokenizer = load_recfound(cfg.paths.base_model, adapter_dir, cfg)
    limit = cfg.evaluate.max_new_tokens
    budgets = answer_budgets(train, tokenizer, cfg.evaluate.answer_margin_tokens, limit)
    system = LLMSystem(name, model, tokenizer, cfg.evaluate.batch_size, limit, budgets)
    run = evaluate_system(system, test, scorer, cfg.evaluate.rank_cutoff, cfg.paths.unified)
    return run, model.adapter


def baseline_systems(cfg: Config, train: list[Row]) -> list[System]:
    """The non-LLM baselines named in `evaluate.baselines` ("base" is evaluated separately)."""
    from recfound.evaluate.baselines import (
        MiniLMSystem,
        PopularitySystem,
        RandomSystem,
        resolve_text_encoder,
    )

    systems: list[System] = []
    for name in cfg.evaluate.baselines:
        if name == "minilm":
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


def write_figures(cfg: Config, out_dir: Path, adapter: Any) -> list[Path]:
    """Figure 2 from the merged adapter (TMoLE only) and Figure 3 from the training log."""
    from recfound.model.adapters import TMoLEAdapter
    from recfound.train.metrics_log import RATIO_CSV

    written = []
    with atomic_dir(out_dir) as tmp:
        if isinstance(adapter, TMoLEAdapter):
            codes, similarity = figures.adapter_routing_similarity(adapter)
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
    test, train = load_splits(cfg)
    reports = Path(cfg.paths.reports)
    runs: dict[str, SystemRun] = {}
    runs["recfound"], merged_adapter = evaluate_llm(
        cfg, "recfound", Path(cfg.paths.merged) / MERGED_ADAPTER_DIR, test, train, scorer
    )
    figure_paths = write_figures(cfg, reports / FIGURES_DIR, merged_adapter)
    del merged_adapter
    runs["no_merge"], _ = evaluate_llm(
        cfg, "no_merge", Path(cfg.paths.adapter), test, train, scorer
    )
    if "base" in cfg.evaluate.baselines:
        runs["base"], _ = evaluate_llm(cfg, "base", None, test, train, scorer)
    for system in baseline_systems(cfg, train):
        runs[system.name] = evaluate_system(
            system, test, scorer, cfg.evaluate.rank_cutoff, cfg.paths.unified
        )
    results = {name: r.results for name, r in runs.items()}
    variants, stale = ablate.current_variants(cfg, reports / VARIANTS_DIR)
    sizes = {code: len(rows) for code, rows in test.items()}
    report.write_metrics(reports / METRICS_FILE, results)
    report.write_results(
        reports / RESULTS_FILE,
        report.render_results(results, variants, cfg.evaluate.rank_cutoff, sizes, stale),
    )
    write_predictions(reports / PREDICTIONS_DIR, runs)
    print(f"metrics: {reports / METRICS_FILE}")
    print(f"tables: {reports / RESULTS_FILE}")
    for path in figure_paths:
        print(f"figure: {path}")
    print(f"generations: {reports / PREDICTIONS_DIR}/<system>.jsonl")
