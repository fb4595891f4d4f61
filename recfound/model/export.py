"""Per-task collapse of an adapter: merge into the base weights, or export as a standard LoRA.

TMoLE's gates depend only on the task, so task t has one fixed weight delta (recfound.md §2):

    ΔW_t = Σ_{e ∈ S_t} g_e(t)(α/r) B_e A_e = B'_t A'_t
    A'_t = [A_e; e ∈ S_t]                          (|S_t|·r × in, the stacked A rows as they are)
    B'_t = [g_e(t)(α/r) B_e; e ∈ S_t]              (out × |S_t|·r)

with S_t the experts task t's kind may use (embedding-only + shared, or shared +
generative-only; `recfound.model.tmole.kind_experts`): the others have gate exactly 0 and
contribute nothing, so they are left out. Task t is exactly one LoRA of rank |S_t|·r (4·r of
6·r by default) with scaling 1 (lora_alpha = r'), or, merged, the plain weight W + ΔW_t with no
inference overhead. A plain LoRA adapter serves every task: its delta is (α/r) B A for all t and
its export is the LoRA itself.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig
from torch import nn
from transformers import PreTrainedModel

from recfound.atomic import atomic_dir
from recfound.model.adapters import (
    Adapter,
    LoRAAdapter,
    TMoLEAdapter,
    remove_adapter_modules,
    write_peft_lora_dir,
)
from recfound.model.tmole import kind_experts
from recfound.progress import progress
from recfound.tasks import NUM_TASKS, TASKS, Task

TASK_INFO_FILE = "recfound_task.json"
# Beside the per-task directories: which tasks were exported (the task set of the run).
EXPORT_INDEX_FILE = "tasks.json"


@dataclass(frozen=True)
class LowRankDelta:
    """One layer's ΔW = b @ a, scaling folded into b."""

    a: torch.Tensor  # (rank × in)
    b: torch.Tensor  # (out × rank)

    def weight_delta(self) -> torch.Tensor:
        return self.b @ self.a


def task_deltas(adapter: Adapter, task_id: int) -> dict[str, LowRankDelta]:
    """Per adapted layer (model module name), task `task_id`'s ΔW_t as low-rank factors.

    TMoLE: a = A'_t, b = B'_t: the rank blocks of the experts task t's kind may use, each block
    of B scaled by g_e(t)·α/r (the other experts' gates are exactly 0).
    LoRA: a = A, b = (α/r)·B, the same for every task.
    """
    if not 0 <= task_id < NUM_TASKS:
        raise ValueError(f"task id must lie in 0..{NUM_TASKS - 1}; got {task_id}")
    deltas: dict[str, LowRankDelta] = {}
    with torch.no_grad():
        if isinstance(adapter, TMoLEAdapter):
            ids = torch.tensor([task_id], device=adapter.routing.task_embedding.device)
            experts = kind_experts(adapter.config, [TASKS[task_id].kind])
            for name, layer in adapter.layers.items():
                rows = layer.expert_rows(experts)
                scales = layer.rank_block_scales(ids)[0, rows]
                deltas[name] = LowRankDelta(
                    a=layer.lora_a[rows].detach(), b=layer.lora_b[:, rows] * scales
                )
        elif isinstance(adapter, LoRAAdapter):
            for name, layer in adapter.layers.items():
                (key,) = layer.active_adapters
                deltas[name] = LowRankDelta(
                    a=layer.lora_A[key].weight.detach(),
                    b=layer.lora_B[key].weight * layer.scaling[key],
                )
        else:
            raise TypeError(f"not an adapter of this project: {type(adapter).__name__}")
    return deltas


def merge_task_into_base(
    model: PreTrainedModel, adapter: Adapter, task_id: int, *, inplace: bool = False
) -> PreTrainedModel:
    """A plain model whose adapted weights are W + ΔW_t: task t at zero inference overhead.

    By default `model` (which carries `adapter`) is left untouched and a merged copy is
    returned, so several tasks can be merged in turn; `inplace=True` merges into `model` itself
    (no second copy in memory) and `adapter` must not be used afterwards.
    """
    if getattr(adapter, "model", None) is not model:
        raise ValueError("`adapter` is not attached to `model`")
    deltas = task_deltas(adapter, task_id)
    merged = model if inplace else copy.deepcopy(model)
    remove_adapter_modules(merged)
    with torch.no_grad():
        for name, delta in deltas.items():
            merged.get_submodule(name).weight.add_(delta.weight_delta())
    return merged


def export_task_lora(
    adapter: Adapter, task_id: int, out_dir: Path, base_model_name_or_path: str
) -> Path:
    """Write task `task_id` as a standard PEFT LoRA directory, exactly (not approximately).

    TMoLE: r = lora_alpha = |S_t|·r (scaling 1), lora_A = A'_t, lora_B = B'_t (module doc).
    LoRA: the LoRA itself.
    `peft.PeftModel.from_pretrained(base, out_dir)` loads it; recfound_task.json names the task.
    """
    task = TASKS[task_id] if 0 <= task_id < NUM_TASKS else None
    if task is None:
        raise ValueError(f"task id must lie in 0..{NUM_TASKS - 1}; got {task_id}")
    task_info = {
        "task_id": task.id,
        "code": task.code,
        "kind": str(task.kind),
        "source_adapter": adapter.kind,
    }
    if isinstance(adapter, LoRAAdapter):
        peft_config = copy.deepcopy(adapter.peft_config)
        peft_config.base_model_name_or_path = base_model_name_or_path
        state = adapter.adapter_state_dict()
    else:
        deltas = task_deltas(adapter, task_id)
        stacked_rank = next(iter(deltas.values())).a.shape[0]
        peft_config = LoraConfig(
            r=stacked_rank,
            lora_alpha=stacked_rank,  # scaling α/r = 1: the gates and α/r live in lora_B
            target_modules=list(adapter.target_modules),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
            base_model_name_or_path=base_model_name_or_path,
        )
        state = {}
        for name, delta in deltas.items():
            state[f"{name}.lora_A.weight"] = delta.a
            state[f"{name}.lora_B.weight"] = delta.b
    out_dir = Path(out_dir)
    write_peft_lora_dir(out_dir, peft_config, state, extra_json={TASK_INFO_FILE: task_info})
    return out_dir


def export_all_tasks(
    adapter: Adapter,
    out_dir: Path,
    base_model_name_or_path: str,
    tasks: Sequence[Task] = TASKS,
) -> dict[str, Path]:
    """Export each of `tasks` to `out_dir/<task code>/` (one atomic write); code -> dir.

    `tasks` is the task set the adapter was trained on (default all 13): a task it never saw
    would export an untrained delta, so the merge stage passes only the present ones.
    `out_dir/tasks.json` records which tasks were exported, in id order.
    """
    if not tasks:
        raise ValueError("no task to export")
    ordered = sorted({task.id: task for task in tasks}.values(), key=lambda task: task.id)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for task in progress(ordered, desc="export per-task LoRA", unit="task"):
            export_task_lora(adapter, task.id, tmp / task.code, base_model_name_or_path)
        index = {"tasks": [task.code for task in ordered], "source_adapter": adapter.kind}
        (tmp / EXPORT_INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", "utf-8")
    return {task.code: out_dir / task.code for task in ordered}


def _base_linear(wrapper: nn.Module) -> nn.Linear:
    """The frozen linear layer an adapter wraps (TMoLE's `base`, PEFT's base layer)."""
    base = getattr(wrapper, "base", None)
    return base if isinstance(base, nn.Linear) else wrapper.get_base_layer()


@contextlib.contextmanager
def merged_task_layers(model: PreTrainedModel, adapter: Adapter, task_id: int) -> Iterator[None]:
    """Inside the block, every adapted layer of `model` is a plain linear layer holding
    W + ΔW_t: task t decodes at the base model's cost, without a copy of the whole model.

    ΔW_t is summed onto W in float32 and then cast to W's dtype: in float32 the merged layer
    computes (W + B'A')x where the routed one computes Wx + B'(A'x), equal up to float32
    rounding (tests/test_predictor.py checks the answers and logits); in bfloat16 the cast
    would round ΔW away where it is small against W, so callers merge in float32 only
    (recfound.model.predictor). The adapter's own modules are put back on exit, untouched:
    the model computes exactly as before the block.
    """
    deltas = task_deltas(adapter, task_id)
    wrappers = {name: model.get_submodule(name) for name in deltas}
    try:
        with torch.no_grad():
            for name, delta in deltas.items():
                base = _base_linear(wrappers[name])
                merged = nn.Linear(
                    base.in_features,
                    base.out_features,
                    bias=base.bias is not None,
                    device=base.weight.device,
                    dtype=base.weight.dtype,
                )
                summed = base.weight.float() + delta.weight_delta().float()
                merged.weight = nn.Parameter(summed.to(base.weight.dtype), requires_grad=False)
                if base.bias is not None:
                    merged.bias = base.bias
                model.set_submodule(name, merged)
        yield
    finally:
        for name, wrapper in wrappers.items():
            model.set_submodule(name, wrapper)
