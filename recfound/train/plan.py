"""`recfound plan`: the memory one GPU needs for a training run, said before the run.

No weight is loaded or allocated. Parameters are counted on the model built from its config on
torch's `meta` device with the configured adapter attached (recfound.model.fit); activations
are measured by running one micro-batch's forward and backward under `FakeTensorMode` (tensors
with shapes and no storage) while torch's MemTracker counts every tensor the run creates.

Per GPU, with P_b the frozen base parameters, P_a the adapter's, b_w the base dtype's bytes,
b_a the adapter's (4: fp32 master weights under mixed precision, else b_w), N GPUs and S = N
under FSDP (everything sharded), 1 under DDP:

    weights      = P_b·b_w / S
    adapter      = P_a·b_a / S
    gradients    = P_a·b_a / S, and as much again for DDP's gradient buckets when N > 1
    AdamW        = 2·P_a·b_a / S                                  (exp_avg, exp_avg_sq)
    FSDP gather  = 2·P_layer·b_w                  (FSDP only: the unsharded layer in use + the next)
    activations  = A(1) + (L − 1)·(A(2) − A(1))                         (L decoder layers)
    GradCache    = R·h·4,  R = k·e·(1 + G) rows: this GPU's queries and passages of a window
    window loss  = 2·R·h·b_act + 2·N·R·h·b_act + 3·4·Q·Q·G,  Q = N·k·e           (transient)
    total        = weights + adapter + gradients + AdamW + FSDP gather + GradCache
                   + max(activations, window loss)

A(n) is the peak of the activations and temporaries (MemTracker's "Activation", "Temp" and
"Other") of one micro-batch — e = `train.embedding_per_batch` queries of `max_len_query`
tokens, e·G passages (G = `group_size`) of `max_len_passage`, g = `generative_per_batch` rows
of `max_len_prompt + max_len_response` with the response's logits and loss — every sequence at
its maximum length (the worst case: batches are padded to their longest row), forward then
backward, through the model cut to n decoder layers. Layers are alike, so the peak grows by
the same amount per layer (with checkpointing: the layer's input; without: all its backward
needs) and two depths give the line. Where the fake run fails (an architecture that reads
values during the forward), the plan falls back to `analytic_activations`.

GradCache (`train.grad_cache`, k = `grad_accum` > 1) keeps the fp32 gradient of this GPU's k·e
queries and k·e·G passages through the step; its window loss (the cached embeddings, their
concatenation, both gathered from the N GPUs, and the Q × Q·G fp32 scores, softmax and
gradient) runs before the micro-batches, so only the larger of it and the activations counts.

Not counted: the CUDA context (~0.5 GiB) and the caching allocator's fragmentation (leave some
GiB of margin); inputs (token ids: kilobytes); the no-grad validation passes of S2Sched (one
layer's activations at a time, below a training micro-batch's).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from recfound.atomic import atomic_file
from recfound.config import Config, TrainConfig
from recfound.errors import RecFoundError
from recfound.model.adapters import Adapter, attach_adapter
from recfound.model.fit import (
    default_model_config,
    load_model_config,
    meta_causal_lm,
    with_layers,
)
from recfound.model.prompts import IGNORE_INDEX
from recfound.model.unified import DTYPES, RecFoundModel
from recfound.tasks import TASKS, Kind
from recfound.train.objective import MultiTaskObjective

Strategy = Literal["ddp", "fsdp"]
GIB = 2**30
FP32_BYTES = 4
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, each shaped like the parameter
FSDP_GATHERED_LAYERS = 2  # the layer computing and the next, prefetched
# The window loss keeps three Q × Q·G fp32 matrices: the scores, their softmax and its gradient.
SCORE_MATRICES = 3
# A measured depth and the next: the peak's growth per decoder layer (module docstring).
PROBE_DEPTHS = (1, 2)
# Where the search for the largest micro-batch stops (rows of one kind per micro-batch).
MAX_MICRO_BATCH = 1 << 20


# ------------------------------------------------------------------------------ what runs


def planned_dtypes(cfg: Config) -> tuple[str, str, bool]:
    """(base weight dtype, activation dtype, mixed precision) of the run on a GPU.

    `auto` means what it means on a GPU that multiplies bf16 natively (every data-centre GPU
    since the A100): bf16 weights and bf16 autocast.
    """
    weights = "bfloat16" if cfg.model.dtype == "auto" else cfg.model.dtype
    mixed = cfg.train.mixed_precision
    mixed = "bf16" if mixed == "auto" else mixed
    activations = {"bf16": "bfloat16", "fp16": "float16"}.get(mixed, weights)
    return weights, activations, mixed != "no"


def first_task(kind: Kind) -> int:
    """The id of the first task of `kind`: the probe routes every sample of a kind to it."""
    return next(task.id for task in TASKS if task.kind is kind)


def worst_case_batch(train: TrainConfig, scale: int = 1) -> dict[str, Any]:
    """One micro-batch of `train`'s sizes (× `scale`), every sequence at its maximum length.

    The objective's input (recfound.train.batches): e queries and e·G passages routed to an
    embedding task, one generative batch of g rows routed to a generative task whose last
    `max_len_response` tokens are the response. Token ids are 0 (any id of any vocabulary).
    """
    e, g = train.embedding_per_batch * scale, train.generative_per_batch * scale
    passages = e * train.group_size
    embedding_task, generative_task = first_task(Kind.EMBEDDING), first_task(Kind.GENERATIVE)

    def texts(rows: int, length: int) -> dict[str, torch.Tensor]:
        ones = torch.ones(rows, length, dtype=torch.long)
        return {"input_ids": torch.zeros_like(ones), "attention_mask": ones, "pool_mask": ones}

    embedding = None
    if e:
        embedding = {
            "queries": texts(e, train.max_len_query),
            "passages": texts(passages, train.max_len_passage),
            "query_task_ids": torch.full((e,), embedding_task),
            "passage_task_ids": torch.full((passages,), embedding_task),
        }
    generative = []
    if g:
        length = train.max_len_prompt + train.max_len_response
        labels = torch.full((g, length), IGNORE_INDEX)
        labels[:, -train.max_len_response :] = 0
        generative.append(
            {
                "input_ids": torch.zeros(g, length, dtype=torch.long),
                "attention_mask": torch.ones(g, length, dtype=torch.long),
                "labels": labels,
                "task_ids": torch.full((g,), generative_task),
            }
        )
    return {"embedding": embedding, "generative": generative}


# ------------------------------------------------------------------------------ measuring


class _NoHook:
    def remove(self) -> None:
        pass


def memory_tracker(*modules: nn.Module) -> Any:
    """torch's MemTracker, tracking `modules`' parameters, ready for a frozen base model.

    torch.distributed._tools.mem_tracker is private (torch 2.13, pinned in pyproject.toml): it
    counts every storage an op creates, by kind, on real and fake tensors alike. When a module
    first runs it hooks each of its parameters' gradient, and torch refuses a hook on a
    parameter without grad, so the frozen ones get a no-op handle beforehand.
    """
    from torch.distributed._tools.mem_tracker import MemTracker

    tracker = MemTracker()
    tracker.track_external(*modules)
    for module in modules:
        for param in module.parameters():
            if not param.requires_grad:
                tracker._param_to_grad_hook_handles[param] = (_NoHook(), _NoHook())
    return tracker


def activation_bytes(tracker: Any) -> int:
    """Activations + temporaries (+ anything uncategorised) of the tracker's peak, all devices."""
    kinds = {"Activation", "Temp", "Other"}
    return sum(
        sum(v for k, v in snap.items() if getattr(k, "value", k) in kinds)
        for snap in tracker.get_tracker_snapshot("peak").values()
    )


def peak_bytes(tracker: Any) -> int:
    """Everything the tracker saw alive at its peak (parameters, gradients, optimizer states …)."""
    return sum(snap["Total"] for snap in tracker.get_tracker_snapshot("peak").values())


@contextlib.contextmanager
def _outside_fake(block: contextlib.AbstractContextManager) -> Iterator[None]:
    """Enter and leave `block` with the fake mode off (its body runs under the mode)."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    with unset_fake_temporarily():
        block.__enter__()
    try:
        yield
    finally:
        with unset_fake_temporarily():
            block.__exit__(None, None, None)


class _HostRouted:
    """The adapter, its routing entered outside the fake mode: routing reads the batch's task
    kinds on the host (`.tolist()`), and fake tensors have no values to read. The task ids are
    real tensors; the layers index the fake task table with them."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter

    def route(self, task_ids: torch.Tensor) -> contextlib.AbstractContextManager:
        return _outside_fake(self.adapter.route(task_ids))

    def checkpoint_contexts(self) -> tuple[contextlib.AbstractContextManager, ...]:
        forward, recompute = self.adapter.checkpoint_contexts()
        return forward, _outside_fake(recompute)


class MicroBatchProbe(nn.Module):
    """One micro-batch's training forward as the objective runs it, without values.

    Embedding: the objective's own `embed` and InfoNCE. Generative: the decoder's causal
    forward, then the LM head and fp32 cross-entropy on the last `max_len_response` positions —
    the objective selects the response positions by a boolean mask, whose size is a value (a
    fake tensor has none); the worst-case batch's responses are those positions.
    """

    def __init__(self, objective: MultiTaskObjective, response_length: int) -> None:
        super().__init__()
        self.objective = objective
        self.response_length = response_length

    def generative_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        model = self.objective.model
        hidden = model.hidden_states(
            batch["input_ids"], batch["attention_mask"], batch["task_ids"], bidirectional=False
        )
        # position t predicts token t + 1: the response's tokens are read at the positions before
        predicting = hidden[:, -self.response_length - 1 : -1]
        logits = model.lm.get_output_embeddings()(predicting)
        targets = batch["input_ids"][:, -self.response_length :]
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())

    def forward(
        self, embedding: dict[str, Any] | None, generative: list[dict[str, torch.Tensor]]
    ) -> torch.Tensor:
        loss = torch.zeros(())
        if embedding is not None:
            queries, passages = self.objective.embed(embedding)
            loss_emb, _ = self.objective.embedding_losses(
                queries, passages, embedding["query_task_ids"], across_processes=False
            )
            loss = loss + loss_emb
        for batch in generative:
            loss = loss + self.generative_loss(batch)
        return loss


def probe_activation_peak(
    cfg: Config, model_config: PretrainedConfig, layers: int, checkpointing: bool
) -> int:
    """A(layers): peak activation bytes of one worst-case micro-batch (module docstring),
    forward and backward, through the model cut to `layers` decoder layers, on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    weights, activations, mixed = planned_dtypes(cfg)
    fake = FakeTensorMode(allow_non_fake_inputs=True)
    with fake:
        lm = AutoModelForCausalLM.from_config(
            with_layers(model_config, layers), dtype=DTYPES[weights]
        )
        adapter = attach_adapter(lm, cfg.model)
        if mixed:  # the Trainer keeps fp32 master weights under autocast
            for param in adapter.trainable_parameters():
                param.data = param.data.float()
    model = RecFoundModel(lm, _HostRouted(adapter))
    if checkpointing:
        model.enable_gradient_checkpointing()
    model.train()
    objective = MultiTaskObjective.from_config(model, cfg)
    probe = MicroBatchProbe(objective, cfg.train.max_len_response)
    batch = worst_case_batch(cfg.train)
    tracker = memory_tracker(probe)
    autocast = torch.autocast("cpu", dtype=DTYPES[activations], enabled=mixed)
    with fake, tracker:
        with autocast:
            loss = probe(**batch)
        loss.backward()
    return activation_bytes(tracker)


def analytic_activations(cfg: Config, model_config: PretrainedConfig, checkpointing: bool) -> int:
    """The fallback estimate of the activations, per token of the worst-case micro-batch:

        without checkpointing: L · b · (8·h + 2·d_kv + 4·I) + b·h
        with checkpointing:    L · b · h + b · (8·h + 2·d_kv + 4·I)

    with h the hidden size, I the MLP's, d_kv the key/value width, b the activation dtype's
    bytes: a decoder layer keeps its input, the norms' outputs, q/k/v, attention output and
    o_proj input (≈ 8·h + 2·d_kv) and the MLP's gate, up, their product (≈ 4·I) for its
    backward (flash-style attention: no L × L scores); with checkpointing each layer keeps its
    input and one layer is recomputed at a time. Plus the response logits in fp32 (3 copies).
    """
    _, activations, _ = planned_dtypes(cfg)
    b = DTYPES[activations].itemsize
    h, inter, layers = (
        model_config.hidden_size,
        model_config.intermediate_size,
        model_config.num_hidden_layers,
    )
    heads = model_config.num_attention_heads
    head_dim = getattr(model_config, "head_dim", None) or h // heads
    kv = getattr(model_config, "num_key_value_heads", heads) * head_dim
    train = cfg.train
    tokens = (
        train.embedding_per_batch * train.max_len_query
        + train.embedding_per_batch * train.group_size * train.max_len_passage
        + train.generative_per_batch * (train.max_len_prompt + train.max_len_response)
    )
    per_layer = b * (8 * h + 2 * kv + 4 * inter)
    layer_stack = (
        layers * b * h + per_layer if checkpointing else layers * per_layer + b * h
    ) * tokens
    response = train.generative_per_batch * train.max_len_response
    logits = SCORE_MATRICES * FP32_BYTES * response * model_config.vocab_size
    return layer_stack + logits


@dataclass(frozen=True)
class Activations:
    """Peak activation bytes of one micro-batch, with and without gradient checkpointing."""

    checkpointing_on: int
    checkpointing_off: int
    method: str  # "measured (FakeTensorMode + MemTracker, 1 and 2 layers)" or "analytic"

    def used(self, checkpointing: bool) -> int:
        return self.checkpointing_on if checkpointing else self.checkpointing_off


def extrapolated(peaks: tuple[int, int], layers: int) -> int:
    """A(L) = A(1) + (L − 1)·(A(2) − A(1))."""
    one, two = peaks
    return one + (layers - 1) * (two - one)


def measure_activations(cfg: Config, model_config: PretrainedConfig) -> Activations:
    """`Activations` measured on fake tensors; the analytic estimate where that cannot run."""
    layers = model_config.num_hidden_layers
    try:
        on, off = (
            extrapolated(
                tuple(probe_activation_peak(cfg, model_config, n, ckpt) for n in PROBE_DEPTHS),
                layers,
            )
            for ckpt in (True, False)
        )
        return Activations(on, off, "measured (FakeTensorMode + MemTracker, 1 and 2 layers)")
    except Exception as err:  # any architecture the fake run cannot take: say so, estimate
        return Activations(
            analytic_activations(cfg, model_config, True),
            analytic_activations(cfg, model_config, False),
            f"analytic (the fake run failed: {type(err).__name__}: {err})",
        )


# ------------------------------------------------------------------------------ the plan


@dataclass(frozen=True)
class ParameterCounts:
    """Parameters of the base model (frozen), of the configured adapter, of one decoder layer."""

    base: int
    adapter: int
    layer: int


def count_parameters(cfg: Config, model_config: PretrainedConfig) -> ParameterCounts:
    """Counted on the meta-device model with the real adapter attached (no storage)."""
    weights, _, _ = planned_dtypes(cfg)
    lm = meta_causal_lm(model_config, DTYPES[weights])
    base = sum(p.numel() for p in lm.parameters())
    layer = sum(p.numel() for p in lm.get_decoder().layers[0].parameters())
    with torch.device("meta"):
        adapter = attach_adapter(lm, cfg.model)
    return ParameterCounts(base, sum(p.numel() for p in adapter.trainable_parameters()), layer)


@dataclass(frozen=True)
class MemoryPlan:
    """Per-GPU bytes of each part, the total, whether it fits, and the largest micro-batch."""

    gpus: int
    strategy: Strategy
    gpu_memory_bytes: int
    gradient_checkpointing: bool
    parameters: ParameterCounts
    parts: dict[str, int]  # name -> bytes, in the order of the table
    activations: Activations
    window_loss: int
    total: int
    largest_micro_batch: tuple[int, int] | None  # (embedding_per_batch, generative_per_batch)
    problems: list[str] = field(default_factory=list)  # recfound.model.fit.fit_problems

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu_memory_bytes

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["fits"] = self.fits
        out["gib"] = {name: value / GIB for name, value in self.parts.items()}
        out["gib"]["total"] = self.total / GIB
        return out


def grad_cache_rows(train: TrainConfig, scale: float = 1.0) -> int:
    """R = k·e·(1 + G): this GPU's cached queries and passages of a window (0 without GradCache)."""
    if not train.grad_cache or train.grad_accum < 2:
        return 0
    return round(train.grad_accum * train.embedding_per_batch * scale * (1 + train.group_size))


def window_loss_bytes(
    train: TrainConfig, hidden: int, act_bytes: int, gpus: int, scale: float = 1.0
) -> int:
    """2·R·h·b_act + 2·N·R·h·b_act + 3·4·Q·Q·G with Q = N·k·e (module docstring)."""
    rows = grad_cache_rows(train, scale)
    if not rows:
        return 0
    queries = gpus * train.grad_accum * train.embedding_per_batch * scale
    embeddings = 2 * rows * hidden * act_bytes * (1 + gpus)
    return round(embeddings + SCORE_MATRICES * FP32_BYTES * queries**2 * train.group_size)


def static_parts(
    cfg: Config, counts: ParameterCounts, gpus: int, strategy: Strategy
) -> dict[str, int]:
    """Weights, adapter, gradients, AdamW and FSDP's gathered layers (module docstring)."""
    weights, _, mixed = planned_dtypes(cfg)
    b_w = DTYPES[weights].itemsize
    b_a = FP32_BYTES if mixed else b_w
    shards = gpus if strategy == "fsdp" else 1
    adapter = counts.adapter * b_a / shards
    buckets = adapter if strategy == "ddp" and gpus > 1 else 0
    return {
        f"frozen base weights ({weights}{', sharded' if shards > 1 else ''})": round(
            counts.base * b_w / shards
        ),
        f"TMoLE parameters ({'fp32 master' if mixed else weights})"
        if cfg.model.adapter == "tmole"
        else "LoRA parameters": round(adapter),
        "gradients" + (" + DDP buckets" if buckets else ""): round(adapter + buckets),
        "AdamW state (2 x fp32)" if b_a == FP32_BYTES else "AdamW state (2x)": round(
            ADAMW_STATES * adapter
        ),
    } | (
        {"FSDP gathered layers": FSDP_GATHERED_LAYERS * counts.layer * b_w}
        if strategy == "fsdp"
        else {}
    )


def plan_total(static: dict[str, int], activations: int, cache: int, window: int) -> int:
    """Static parts + GradCache's cache + the larger of the activations and the window loss."""
    return sum(static.values()) + cache + max(activations, window)


def largest_micro_batch(
    cfg: Config,
    static: dict[str, int],
    activations: int,
    hidden: int,
    gpus: int,
    budget: int,
) -> tuple[int, int] | None:
    """The largest (embedding_per_batch, generative_per_batch) at the configured ratio whose plan
    fits `budget`, activations scaled linearly with the micro-batch (every activation has the
    batch dimension); None if not even the smallest fits. The total grows with the size, so a
    bisection finds it."""
    train = cfg.train
    _, act_dtype, _ = planned_dtypes(cfg)
    unit = train.embedding_per_batch or train.generative_per_batch

    def fits(size: int) -> bool:
        scale = size / unit
        cache = grad_cache_rows(train, scale) * hidden * FP32_BYTES
        window = window_loss_bytes(train, hidden, DTYPES[act_dtype].itemsize, gpus, scale)
        return plan_total(static, round(activations * scale), cache, window) <= budget

    if not fits(1):
        return None
    low, high = 1, 2
    while fits(high) and high < MAX_MICRO_BATCH:
        low, high = high, 2 * high
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    scale = low / unit
    return round(train.embedding_per_batch * scale), round(train.generative_per_batch * scale)


def plan_memory(
    cfg: Config,
    model_config: PretrainedConfig,
    gpus: int = 1,
    strategy: Strategy = "ddp",
    gpu_memory_gib: float = 80.0,
    problems: list[str] | None = None,
) -> MemoryPlan:
    """The per-GPU memory plan of training `cfg` on `gpus` GPUs of `gpu_memory_gib` each."""
    if gpus < 1:
        raise ValueError(f"gpus must be at least 1, got {gpus}")
    counts = count_parameters(cfg, model_config)
    static = static_parts(cfg, counts, gpus, strategy)
    activations = measure_activations(cfg, model_config)
    _, act_dtype, _ = planned_dtypes(cfg)
    hidden = model_config.hidden_size
    cache = grad_cache_rows(cfg.train) * hidden * FP32_BYTES
    window = window_loss_bytes(cfg.train, hidden, DTYPES[act_dtype].itemsize, gpus)
    checkpointing = cfg.train.gradient_checkpointing
    used = activations.used(checkpointing)
    parts = {
        **static,
        "GradCache cache (fp32 gradients of the window's embeddings)": cache,
        f"activations ({'with' if checkpointing else 'without'} gradient checkpointing)": used,
    }
    budget = math.floor(gpu_memory_gib * GIB)
    return MemoryPlan(
        gpus=gpus,
        strategy=strategy,
        gpu_memory_bytes=budget,
        gradient_checkpointing=checkpointing,
        parameters=counts,
        parts=parts,
        activations=activations,
        window_loss=window,
        total=plan_total(static, used, cache, window),
        largest_micro_batch=largest_micro_batch(cfg, static, used, hidden, gpus, budget),
        problems=list(problems or []),
    )


def format_plan(plan: MemoryPlan, cfg: Config) -> str:
    """The plan as a table for people: one row per part in GiB, the total, the verdict."""
    train = cfg.train
    lines = [
        f"memory plan per GPU: {plan.gpus} GPU(s), {plan.strategy.upper()}, "
        f"{plan.gpu_memory_bytes / GIB:g} GiB each",
        f"micro-batch: {train.embedding_per_batch} queries x {train.max_len_query} + "
        f"{train.embedding_per_batch * train.group_size} passages x {train.max_len_passage} + "
        f"{train.generative_per_batch} generative x "
        f"{train.max_len_prompt + train.max_len_response} tokens; grad_accum {train.grad_accum}",
        f"parameters: base {plan.parameters.base:,}, adapter {plan.parameters.adapter:,}",
        "",
    ]
    width = max(len(name) for name in plan.parts) + 2
    for name, value in plan.parts.items():
        lines.append(f"  {name:<{width}}{value / GIB:9.2f} GiB")
    other = not plan.gradient_checkpointing
    lines.append(
        f"  {'(activations ' + ('with' if other else 'without') + ' checkpointing)':<{width}}"
        f"{plan.activations.used(other) / GIB:9.2f} GiB"
    )
    if plan.window_loss:
        lines.append(
            f"  {'(GradCache window loss, transient)':<{width}}{plan.window_loss / GIB:9.2f} GiB"
        )
    lines.append(f"  {'total':<{width}}{plan.total / GIB:9.2f} GiB")
    lines.append("")
    verdict = "fits" if plan.fits else "does NOT fit"
    lines.append(f"{verdict} in {plan.gpu_memory_bytes / GIB:g} GiB")
    if plan.largest_micro_batch is None:
        lines.append("largest micro-batch that fits: none (even 1 row is too much)")
    else:
        e, g = plan.largest_micro_batch
        lines.append(
            f"largest micro-batch that fits: embedding_per_batch {e}, generative_per_batch {g}"
        )
    lines.append(f"activations: {plan.activations.method}")
    for problem in plan.problems:
        lines.append(f"problem: {problem}")
    return "\n".join(lines)


def write_plan_json(plan: MemoryPlan, path: Path) -> Path:
    """The plan as JSON (bytes per part, GiB beside them), written atomically."""
    with atomic_file(path) as out:
        out.write(json.dumps(plan.to_json(), indent=2) + "\n")
    return path


def resolve_model_config(cfg: Config, location: Path | None) -> PretrainedConfig:
    """The model config to plan for: `location` (a model directory or config.json), else the
    config.json of `model.base` when that is a local model directory."""
    if location is None:
        location = default_model_config(cfg.model.base)
        if location is None:
            raise RecFoundError(
                f"model.base is {cfg.model.base!r}, not a local model directory with a "
                "config.json: pass --model-config DIR_or_config.json"
            )
    return load_model_config(location)
