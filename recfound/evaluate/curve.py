"""The learning curve: a validation metric of a few tasks at every saved checkpoint.

For each complete checkpoint under `paths.checkpoints` (step 0 is the untrained adapter), the
adapter of that step is scored with the test protocol (recfound.evaluate.protocol: MRR@k,
NDCG@k, Recall@1, …, the task's primary metric) on the same seeded sample of at most
`evaluate.curve_rows` VALIDATION rows of each task in `evaluate.curve_tasks` that the task set
holds. The validation split is never the test split, so the curve may steer a choice of steps
without touching the figures it would be judged by.

Written as reports/learning_curve.csv in long format, `step,task,metric,score`, which the
`per_task` DVC plot template draws one line per task (dvc.yaml, stage evaluate).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recfound.atomic import atomic_file
from recfound.config import Config
from recfound.evaluate.metrics import PairScorer
from recfound.evaluate.systems import Row
from recfound.outputs import CURVE_FILE
from recfound.progress import progress
from recfound.tasks import BY_CODE, Task

CURVE_COLUMNS = ("step", "task", "metric", "score")


@dataclass(frozen=True)
class CurvePoint:
    """One task's validation score at one checkpoint step."""

    step: int
    task: str
    metric: str
    score: float


def curve_tasks(wanted: Iterable[str], present: Sequence[Task]) -> list[Task]:
    """The tasks of `wanted` (codes) that the task set `present` holds, in task order."""
    wanted = {code.upper() for code in wanted}
    return [task for task in present if task.code in wanted]


def curve_rows(rows: Sequence[Row], n: int, seed: int, task: Task) -> list[Row]:
    """A seeded sample of at most `n` rows, in split order (the same rows at every step)."""
    rng = np.random.default_rng([seed, task.id])
    chosen = np.sort(rng.permutation(len(rows))[:n])
    return [rows[int(i)] for i in chosen]


def score_checkpoints(
    cfg: Config, scorer: PairScorer, adapters: Sequence[tuple[int, Path]]
) -> list[CurvePoint]:
    """`CurvePoint`s of every (step, adapter directory) in `adapters` (see module docstring)."""
    from recfound.data.unified import load_unified, present_tasks
    from recfound.evaluate.protocol import evaluate_system, rows_by_task
    from recfound.evaluate.systems import LLMSystem, answer_budgets
    from recfound.model.predictor import Predictor

    dataset = load_unified(cfg.paths.unified, ("train", "validation"))
    tasks = curve_tasks(cfg.evaluate.curve_tasks, present_tasks(dataset))
    if not tasks or not adapters:
        return []
    by_task = rows_by_task(dataset["validation"].to_list(), tasks)
    sampled = {
        code: curve_rows(rows, cfg.evaluate.curve_rows, cfg.seed, BY_CODE[code])
        for code, rows in by_task.items()
    }
    train = dataset["train"].select_columns(["task", "kind", "output"]).to_list()
    limit = cfg.evaluate.max_new_tokens
    budgets: dict[str, int] | None = None  # the base model's tokenizer: the same at every step
    points: list[CurvePoint] = []
    for step, adapter_dir in progress(adapters, desc="learning curve", unit="ckpt"):
        predictor = Predictor.load(cfg, cfg.paths.base_model, adapter_dir)
        if budgets is None:
            margin = cfg.evaluate.answer_margin_tokens
            budgets = answer_budgets(train, predictor.tokenizer, margin, limit)
        system = LLMSystem(f"step {step}", predictor, budgets)
        run = evaluate_system(system, sampled, scorer, cfg.evaluate.rank_cutoff, cfg.paths.unified)
        points += [
            CurvePoint(step, code, result.primary, result.score)
            for code, result in run.results.items()
        ]
        del system, predictor
    return points


def write_curve(points: Sequence[CurvePoint], path: Path) -> Path:
    """The long-format CSV of the module docstring, rows by step then task."""
    with atomic_file(path) as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CURVE_COLUMNS)
        for p in sorted(points, key=lambda p: (p.step, BY_CODE[p.task].id)):
            writer.writerow([p.step, p.task, p.metric, f"{p.score:.6f}"])
    return path


def learning_curve(cfg: Config, scorer: PairScorer) -> Path | None:
    """Score every saved checkpoint and write reports/learning_curve.csv; None (and a line
    saying why) when there is nothing to draw."""
    from recfound.train.checkpoint import ADAPTER_DIR, list_checkpoints

    adapters = [
        (step, path / ADAPTER_DIR) for step, path in list_checkpoints(cfg.paths.checkpoints)
    ]
    points = score_checkpoints(cfg, scorer, adapters)
    if not points:
        print(
            f"learning curve skipped: no checkpoint in {cfg.paths.checkpoints} or none of "
            f"evaluate.curve_tasks {list(cfg.evaluate.curve_tasks)} in the task set"
        )
        return None
    return write_curve(points, Path(cfg.paths.reports) / CURVE_FILE)
