"""Which training checkpoints to merge (`merge.checkpoints` in params.yaml).

- `all`: every saved checkpoint after the initial one (step 0).
- `best_per_task`: for each task of the task set (the tasks with training rows,
  recfound.data.unified.present_tasks), the checkpoint with the lowest loss on the VALIDATION
  split (never the test split); the union of those steps. The loss is training's own per-task
  loss (recfound.train.objective: `train.loss_gen_reduction` included) over the seeded
  validation rows training measures before and after (`train.val_rows_per_task`), with
  training's encoding settings and `train.eval_batch_size`.
- a list of steps, e.g. [16, 32, 48]: exactly those. Negative entries count from the newest
  trained checkpoint, as Python indexes a list: [-2, -1] is the last two, whatever
  `train.steps` and `train.save_every` are.

Step 0 is the initial adapter the task vectors are measured from, so it is never "selected".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from recfound.config import Config
from recfound.errors import RecFoundError
from recfound.tasks import TASKS, Task
from recfound.train.checkpoint import ADAPTER_DIR, list_checkpoints

INITIAL_STEP = 0


@dataclass(frozen=True)
class Selection:
    """The chosen steps and, for best_per_task, the evidence behind them."""

    steps: list[int]
    rule: str  # "all" | "best_per_task" | "explicit"
    best_step_per_task: dict[str, int] = field(default_factory=dict)
    validation_losses: dict[int, dict[str, float]] = field(default_factory=dict)


def adapter_dirs(checkpoints_root: Path) -> dict[int, Path]:
    """step -> adapter directory of every complete checkpoint under `checkpoints_root`."""
    found = {step: path / ADAPTER_DIR for step, path in list_checkpoints(checkpoints_root)}
    if INITIAL_STEP not in found:
        raise RecFoundError(
            f"{checkpoints_root}: no step-{INITIAL_STEP:06d} checkpoint (the initial adapter the "
            "task vectors are measured from); run `recfound stage train` first"
        )
    return found


def best_steps(
    losses: Mapping[int, Mapping[str, float]], tasks: Sequence[Task] = TASKS
) -> dict[str, int]:
    """Per code of `tasks`, the step with the lowest (non-NaN) loss; the earliest on a tie.

    A task without any loss (no validation rows) is left out.
    """
    best: dict[str, int] = {}
    for task in tasks:
        scored = [
            (loss[task.code], step)
            for step, loss in sorted(losses.items())
            if task.code in loss and not math.isnan(loss[task.code])
        ]
        if scored:
            best[task.code] = min(scored)[1]
    return best


def validation_losses_per_step(
    cfg: Config, adapters: Mapping[int, Path], steps: Sequence[int]
) -> tuple[tuple[Task, ...], dict[int, dict[str, float]]]:
    """The task set, and step -> task code -> loss on the whole validation split (training's
    loss definition) for each task of the set with validation rows."""
    from recfound.data.unified import load_unified, present_tasks
    from recfound.model.inference import load_recfound
    from recfound.progress import progress
    from recfound.train.batches import BatchEncoder, validation_rows
    from recfound.train.objective import MultiTaskObjective, validation_losses

    dataset = load_unified(cfg.paths.unified, ("train", "validation"))
    task_set = present_tasks(dataset)
    validation = dataset["validation"]
    # The same seeded rows as training's before/after validation losses.
    rows = validation_rows(
        validation, cfg.train.val_rows_per_task, cfg.seed, [t.id for t in task_set]
    )
    tasks = [t for t, indices in rows.items() if len(indices)]
    losses: dict[int, dict[str, float]] = {}
    for step in progress(steps, desc="validation loss per checkpoint", unit="ckpt"):
        model, tokenizer = load_recfound(cfg.paths.base_model, adapters[step], cfg)
        encoder = BatchEncoder(validation, tokenizer, cfg.train, cfg.paths.unified)
        objective = MultiTaskObjective.from_config(model, cfg)
        per_task = validation_losses(
            objective,
            encoder,
            rows,
            tasks,
            cfg.train.eval_batch_size,
            desc=f"validation loss of step {step}",
        )
        losses[step] = {TASKS[t].code: loss for t, loss in per_task.items()}
        del model, objective
    return task_set, losses


def select_checkpoints(cfg: Config, adapters: Mapping[int, Path]) -> Selection:
    """Apply `cfg.merge.checkpoints` to the available checkpoints (module docstring)."""
    trained = sorted(step for step in adapters if step != INITIAL_STEP)
    if not trained:
        raise RecFoundError(
            f"{cfg.paths.checkpoints}: only the initial checkpoint; nothing to merge"
        )
    spec = cfg.merge.checkpoints
    if spec == "all":
        return Selection(trained, "all")
    if spec == "best_per_task":
        task_set, losses = validation_losses_per_step(cfg, adapters, trained)
        best = best_steps(losses, task_set)
        if not best:
            raise RecFoundError("best_per_task: no task has a finite validation loss")
        return Selection(sorted(set(best.values())), "best_per_task", best, losses)
    return Selection(explicit_steps(spec, trained, cfg.paths.checkpoints), "explicit")


def explicit_steps(spec: Sequence[int], trained: Sequence[int], where: Path) -> list[int]:
    """Resolve a list of steps (negative: counted from the newest of `trained`), sorted."""
    too_far = [entry for entry in spec if entry < 0 and -entry > len(trained)]
    if too_far:
        raise RecFoundError(
            f"merge.checkpoints asks for {too_far} from the end, but {where} holds only "
            f"{len(trained)} trained checkpoints {list(trained)}"
        )
    steps = {trained[entry] if entry < 0 else entry for entry in spec}
    missing = sorted(steps - set(trained))
    if missing:
        raise RecFoundError(
            f"merge.checkpoints asks for steps {missing}, which are not among the trained "
            f"checkpoints {list(trained)} in {where}"
        )
    return sorted(steps)
