"""The `train` stage: base model + unified dataset -> checkpoints, adapter, training curves.

`recfound stage train` (dvc.yaml, Prefect) calls `run(cfg)`. On several GPUs or nodes the same
entry point runs under `accelerate launch` (docs/training.md).

The tasks trained are those with training rows (recfound.data.unified.present_tasks): any
non-empty subset of the 13 works, so a user who brings only some sources trains on what
they feed.

Outputs:
  paths.checkpoints/step-XXXXXX/   resumable checkpoints (step-000000 = the initial adapter)
  paths.adapter/                   the final adapter
  paths.train_metrics/             steps.jsonl, loss_per_task.csv, ratio_per_task.csv,
                                   val_loss.json, samples/rank-N.jsonl
"""

from __future__ import annotations

from pathlib import Path

import datasets
import torch
from accelerate.utils import set_seed

from recfound.config import Config, TrainConfig
from recfound.data.unified import load_unified, present_tasks
from recfound.errors import DataError
from recfound.tasks import TASKS, Task
from recfound.train.loop import (
    Trainer,
    TrainOutcome,
    make_accelerator,
    run_fingerprint,
    trained_kinds,
)

REQUIRED_SPLITS = ("train", "validation")


def check_task_set(
    dataset: datasets.DatasetDict, path: Path, train_cfg: TrainConfig, need_validation: bool
) -> tuple[Task, ...]:
    """The task set (tasks with training rows), after checking training can use it.

    DataError when no task has training rows, when no present kind gets slots (e.g. only
    embedding tasks and `train.embedding_per_batch: 0`), or, when S2Sched measures validation
    losses (`need_validation`), when a present task has no validation rows.
    """
    tasks = present_tasks(dataset)
    if not tasks:
        raise DataError(path / "train", "no training rows of any task")
    if not trained_kinds(train_cfg, tasks):
        zero = [f"train.{kind}_per_batch" for kind in sorted({t.kind.value for t in tasks})]
        raise DataError(
            path / "train",
            f"tasks {', '.join(t.code for t in tasks)}, but {' and '.join(zero)} is 0: "
            "nothing to train",
        )
    if need_validation:
        validated = {t.id for t in present_tasks(dataset, "validation")}
        missing = [t.code for t in tasks if t.id not in validated]
        if missing:
            raise DataError(
                path / "validation",
                f"no rows of task(s) {', '.join(missing)}, which have training rows "
                "(S2Sched needs a validation loss of every trained task)",
            )
    return tasks


def build_trainer(cfg: Config) -> Trainer:
    """Load base model and data, attach a fresh adapter: the Trainer, ready to run (or resume).

    Sets torch's thread count to `train.threads` (the stage's one place for it) when given.
    """
    from recfound.model.adapters import attach_adapter
    from recfound.model.inference import load_recfound

    if cfg.train.threads is not None:
        torch.set_num_threads(cfg.train.threads)
    dataset = load_unified(cfg.paths.unified, REQUIRED_SPLITS)
    tasks = check_task_set(dataset, cfg.paths.unified, cfg.train, cfg.s2sched.enabled)
    accelerator = make_accelerator(cfg.train, tasks)
    # Seeded before the adapter is initialised, so a fresh run is reproducible.
    set_seed(cfg.seed)
    model, tokenizer = load_recfound(cfg.paths.base_model, None, cfg, accelerator.device)
    model.adapter = attach_adapter(model.lm, cfg.model)
    if cfg.train.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    fingerprint = run_fingerprint(cfg, dataset, Path(cfg.paths.base_model))
    return Trainer(cfg, model, tokenizer, dataset, accelerator, fingerprint)


def train(cfg: Config, report_val_loss: bool = True) -> TrainOutcome:
    """Build the trainer, train (or resume), write outputs.

    `report_val_loss`: measure the per-task validation loss before and after (val_loss.json).
    """
    return build_trainer(cfg).run(report_val_loss)


def run(cfg: Config) -> None:
    """Stage entry point: train, then print the outputs and the validation-loss comparison."""
    from accelerate import PartialState

    outcome = train(cfg)
    if not PartialState().is_main_process:
        return
    last = outcome.last_record
    if last:
        print(
            f"step {last['step']}: loss {last['loss']:.4f} "
            f"(embedding {last['loss_emb']:.4f}, generative {last['loss_gen']:.4f})"
        )
    if outcome.val_loss_after:
        print("validation loss per task (untrained -> trained):")
        for task_id, before in sorted(outcome.val_loss_before.items()):
            after = outcome.val_loss_after[task_id]
            mark = "better" if after < before else "NOT better"
            print(f"  {TASKS[task_id].code:4s} {before:8.4f} -> {after:8.4f}  {mark}")
    for path in outcome.outputs:
        print(f"wrote {path}")
