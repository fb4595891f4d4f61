"""The `train` stage: base model + unified dataset -> checkpoints, adapter, training curves.

`recfound stage train` (dvc.yaml, Prefect) calls `run(cfg)`. On several GPUs or nodes the same
entry point runs under `accelerate launch` (docs/training.md).

Outputs:
  paths.checkpoints/step-XXXXXX/   resumable checkpoints (step-000000 = the initial adapter)
  paths.adapter/                   the final adapter
  paths.train_metrics/             steps.jsonl, loss_per_task.csv, ratio_per_task.csv,
                                   val_loss.json, samples/rank-N.jsonl
"""

from __future__ import annotations

from pathlib import Path

import datasets
from accelerate.utils import set_seed

from recfound.config import Config
from recfound.errors import DataError
from recfound.tasks import TASKS
from recfound.train.loop import (
    Trainer,
    TrainOutcome,
    make_accelerator,
    run_fingerprint,
)

REQUIRED_SPLITS = ("train", "validation")


def load_unified(path: str | Path) -> datasets.DatasetDict:
    """The unified DatasetDict at `path`; DataError if it is missing or lacks a split."""
    path = Path(path)
    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataError(
            path, f"no unified dataset here ({err}); run `recfound stage build`"
        ) from err
    if not isinstance(dataset, datasets.DatasetDict):
        raise DataError(path, "expected a DatasetDict with train/validation/test splits")
    missing = [s for s in REQUIRED_SPLITS if s not in dataset]
    if missing:
        raise DataError(path, f"missing split(s) {missing}; found {list(dataset)}")
    return dataset


def check_tasks_present(dataset: datasets.DatasetDict, path: Path, need_validation: bool) -> None:
    """Every task needs training rows, and validation rows when S2Sched measures them."""
    for split in ("train", "validation") if need_validation else ("train",):
        present = set(dataset[split].unique("task_id"))
        missing = [t.code for t in TASKS if t.id not in present]
        if missing:
            raise DataError(path / split, f"no rows of task(s) {', '.join(missing)}")


def train(cfg: Config, report_val_loss: bool = True) -> TrainOutcome:
    """Load base model and data, attach a fresh adapter, train (or resume), write outputs.

    `report_val_loss`: measure the per-task validation loss before and after (val_loss.json).
    """
    from recfound.model.adapters import attach_adapter
    from recfound.model.inference import load_recfound

    accelerator = make_accelerator(cfg.train)
    dataset = load_unified(cfg.paths.unified)
    check_tasks_present(dataset, cfg.paths.unified, cfg.s2sched.enabled)
    # Seeded before the adapter is initialised, so a fresh run is reproducible.
    set_seed(cfg.seed)
    model, tokenizer = load_recfound(cfg.paths.base_model, None, cfg, accelerator.device)
    model.adapter = attach_adapter(model.lm, cfg.model)
    fingerprint = run_fingerprint(cfg, dataset, Path(cfg.paths.base_model))
    trainer = Trainer(cfg, model, tokenizer, dataset, accelerator, fingerprint)
    return trainer.run(report_val_loss)


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
        for task in TASKS:
            before, after = outcome.val_loss_before[task.id], outcome.val_loss_after[task.id]
            mark = "better" if after < before else "NOT better"
            print(f"  {task.code:4s} {before:8.4f} -> {after:8.4f}  {mark}")
    for path in outcome.outputs:
        print(f"wrote {path}")
