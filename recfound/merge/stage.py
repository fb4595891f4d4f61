"""DVC stage `merge`: checkpoints of the training run -> one merged adapter + per-task LoRAs.

Reads `paths.checkpoints/step-XXXXXX/adapter/` (step 0 = the initial adapter), the base model,
the task set of the unified dataset (the tasks with training rows) and, for `best_per_task`
only, the validation split. Writes `paths.merged/` atomically:

    adapter/          the merged adapter (same format as training's: load_adapter reads it)
    tasks/<CODE>/     each task of the task set exported as a standard PEFT LoRA
                      (recfound.model.export); tasks/tasks.json lists them
    merge.json        the task set, which checkpoints, how chosen, method, density (and the
                      losses behind best_per_task)
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from recfound.atomic import atomic_dir
from recfound.config import Config
from recfound.data.unified import load_unified, present_tasks
from recfound.errors import DataError, RecFoundError
from recfound.merge.layout import MERGE_INFO_FILE, MERGED_ADAPTER_DIR, TASK_ADAPTERS_DIR
from recfound.merge.methods import StateDict, merge_state_dicts
from recfound.merge.select import INITIAL_STEP, Selection, adapter_dirs, select_checkpoints
from recfound.model.adapters import ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE
from recfound.tasks import Task


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """adapter_config.json of an adapter directory, as a dict (DataError if unreadable)."""
    path = adapter_dir / ADAPTER_CONFIG_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(path, f"unreadable adapter config: {err}") from None


def read_adapter_weights(adapter_dir: Path) -> StateDict:
    """The tensors of an adapter directory, exactly as saved (keys as on disk)."""
    path = adapter_dir / ADAPTER_WEIGHTS_FILE
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise DataError(path, f"unreadable adapter weights: {err}") from None


def _same_adapter_config(initial_dir: Path, others: list[Path]) -> dict[str, Any]:
    """The initial adapter's config, after checking every selected checkpoint shares it."""
    reference = read_adapter_config(initial_dir)
    for adapter_dir in others:
        if read_adapter_config(adapter_dir) != reference:
            raise DataError(
                adapter_dir / ADAPTER_CONFIG_FILE,
                f"differs from {initial_dir / ADAPTER_CONFIG_FILE}: checkpoints of one run "
                "must share one adapter configuration to be merged",
            )
    return reference


def merge_info(cfg: Config, selection: Selection, tasks: Sequence[Task]) -> dict[str, Any]:
    """The content of merge.json; `tasks` is the task set (what tasks/ holds)."""
    return {
        "tasks": [task.code for task in tasks],
        "method": cfg.merge.method,
        "density": cfg.merge.density,
        "slerp_t": cfg.merge.slerp_t if cfg.merge.method == "slerp" else None,
        "selection": selection.rule,
        "initial_step": INITIAL_STEP,
        "checkpoints": selection.steps,
        "best_step_per_task": selection.best_step_per_task,
        "validation_losses": {str(k): v for k, v in selection.validation_losses.items()},
        "seed": cfg.seed,
    }


def write_merged_adapter(
    out_dir: Path, initial_dir: Path, selected_dirs: list[Path], cfg: Config
) -> None:
    """Merge the selected checkpoints' adapters into `out_dir` (config copied, tensors merged)."""
    _same_adapter_config(initial_dir, selected_dirs)
    merged = merge_state_dicts(
        read_adapter_weights(initial_dir),
        [read_adapter_weights(d) for d in selected_dirs],
        cfg.merge.method,
        cfg.merge.density,
        cfg.merge.slerp_t,
        seed=cfg.seed,
    )
    out_dir.mkdir(parents=True)
    shutil.copyfile(initial_dir / ADAPTER_CONFIG_FILE, out_dir / ADAPTER_CONFIG_FILE)
    save_file({k: v.contiguous() for k, v in merged.items()}, out_dir / ADAPTER_WEIGHTS_FILE)


def run(cfg: Config) -> None:
    """Select, merge, export; print where the outputs went."""
    from recfound.model.export import export_all_tasks
    from recfound.model.inference import load_recfound

    tasks = present_tasks(load_unified(cfg.paths.unified, ("train",)))
    if not tasks:
        raise DataError(cfg.paths.unified / "train", "no training rows of any task")
    adapters = adapter_dirs(cfg.paths.checkpoints)
    selection = select_checkpoints(cfg, adapters)
    if cfg.merge.method == "slerp" and len(selection.steps) != 2:
        raise RecFoundError(
            f"merge.method=slerp merges exactly two checkpoints; merge.checkpoints="
            f"{selection.rule} selected steps {selection.steps} in {cfg.paths.checkpoints}"
        )
    print(
        f"merge: {cfg.merge.method} (density {cfg.merge.density}) of steps {selection.steps} "
        f"({selection.rule}) relative to step {INITIAL_STEP}"
    )
    with atomic_dir(cfg.paths.merged) as tmp:
        adapter_dir = tmp / MERGED_ADAPTER_DIR
        write_merged_adapter(
            adapter_dir, adapters[INITIAL_STEP], [adapters[s] for s in selection.steps], cfg
        )
        # Loading through the model checks the merged adapter really loads, then exports it.
        model, _ = load_recfound(cfg.paths.base_model, adapter_dir, cfg, device="cpu")
        export_all_tasks(model.adapter, tmp / TASK_ADAPTERS_DIR, str(cfg.paths.base_model), tasks)
        (tmp / MERGE_INFO_FILE).write_text(
            json.dumps(merge_info(cfg, selection, tasks), indent=2) + "\n", encoding="utf-8"
        )
    print(f"merged adapter: {cfg.paths.merged / MERGED_ADAPTER_DIR}")
    codes = ", ".join(task.code for task in tasks)
    print(f"per-task PEFT LoRA adapters ({codes}): {cfg.paths.merged / TASK_ADAPTERS_DIR}/<TASK>/")
    print(f"merge record: {cfg.paths.merged / MERGE_INFO_FILE}")
