"""TMoLE: Task-wise Mixture of Low-rank Experts (recfound.md §2), as one wrapper layer.

For an adapted linear layer W and a sample of task t:

    y = W x + Σ_e g_e(t) · (α / r) · B_e A_e dropout(x)
    g(t) = softmax( router(task_table[t]) + mask[t] )

`dropout` (`model.tmole.dropout`) acts in training mode only, as LoRA's; one dropout mask serves
all experts of a layer (the authors' loop draws one per expert: the same in expectation).

The E experts come in three groups, in this order: embedding-only, shared, generative-only.
`mask[t]` is −∞ on the generative-only experts for an embedding task and on the
embedding-only experts for a generative task, 0 elsewhere, so those experts get weight exactly 0.
The task table is one for the whole model (`TaskRouting`), the router is one per adapted layer
(`TMoLELinear.router`).

The experts are stacked: A = [A_1; …; A_E] is one (E·r × in) matrix and B = [B_1 … B_E] one
(out × E·r) matrix, so the adapter path is two matmuls of rank E·r with a per-sample scale of
each rank block (g_e(t)·α/r, repeated r times) between them — no loop over experts.

The experts a task kind may use are contiguous in that order (embedding: embedding-only +
shared; generative: shared + generative-only). When every sample of a routed batch is of one
kind — every batch the trainer builds — the layer multiplies only those experts' rank rows of A
and B (a view, no copy); the others have gate exactly 0 and would add exactly 0, so outputs and
gradients are those of the full product. A batch mixing kinds uses all E·r rows.

Within one routed block the gates depend only on the batch's task ids and the router weights,
neither of which changes there. Without autograd (inference, validation, GradCache's first
pass) each layer computes its rank-block scales once per block and batch size and reuses them
at every later forward of the block — every decoding step of a generation: same numbers, without
a router matmul, softmax and gathers per layer and token. With autograd they are recomputed,
so gradients reach the router and the task table.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from recfound.config import TMoLEConfig
from recfound.tasks import NUM_TASKS, TASKS, Kind


def expert_group_sizes(cfg: TMoLEConfig) -> tuple[int, int, int]:
    """(embedding-only, shared, generative-only) expert counts; each task kind must see ≥ 1."""
    sizes = (cfg.experts_embedding, cfg.experts_shared, cfg.experts_generative)
    if min(sizes) < 0 or sizes[0] + sizes[1] == 0 or sizes[1] + sizes[2] == 0:
        raise ValueError(
            "model.tmole: every task kind needs at least one expert it may use "
            "(experts_embedding + experts_shared ≥ 1, experts_shared + experts_generative ≥ 1); "
            f"got embedding={sizes[0]}, shared={sizes[1]}, generative={sizes[2]}"
        )
    return sizes


def expert_labels(cfg: TMoLEConfig) -> list[str]:
    """Readable names of the experts in stacking order, e.g. ['emb0', 'emb1', 'shared0', …]."""
    n_emb, n_shared, n_gen = expert_group_sizes(cfg)
    return (
        [f"emb{i}" for i in range(n_emb)]
        + [f"shared{i}" for i in range(n_shared)]
        + [f"gen{i}" for i in range(n_gen)]
    )


def expert_logit_mask(cfg: TMoLEConfig, dtype: torch.dtype) -> torch.Tensor:
    """(NUM_TASKS × E), added to the router's logits: −∞ where task t may not use expert e.

    Embedding tasks may not use the generative-only experts, generative tasks not the
    embedding-only ones; everything else is 0.
    """
    n_emb, n_shared, n_gen = expert_group_sizes(cfg)
    mask = torch.zeros(NUM_TASKS, n_emb + n_shared + n_gen, dtype=dtype)
    for task in TASKS:
        if task.is_embedding:
            mask[task.id, n_emb + n_shared :] = float("-inf")
        else:
            mask[task.id, :n_emb] = float("-inf")
    return mask


def kind_experts(cfg: TMoLEConfig, kinds: Iterable[Kind]) -> slice:
    """The experts that tasks of these kinds may use, as one slice of the stacking order.

    Embedding: embedding-only + shared; generative: shared + generative-only; both (or none):
    all experts. Each is contiguous because the groups are stacked in that order.
    """
    n_emb, n_shared, n_gen = expert_group_sizes(cfg)
    present = set(kinds)
    if present == {Kind.EMBEDDING}:
        return slice(0, n_emb + n_shared)
    if present == {Kind.GENERATIVE}:
        return slice(n_emb, n_emb + n_shared + n_gen)
    return slice(0, n_emb + n_shared + n_gen)


def init_task_embeddings_(table: torch.Tensor) -> None:
    """Task-embedding table: Xavier-normal, as the reference."""
    nn.init.xavier_normal_(table)


def init_expert_down_projections_(lora_a: torch.Tensor) -> None:
    """Stacked A_e: kaiming-uniform as LoRA's A (fan-in is `in` for every block alike)."""
    nn.init.kaiming_uniform_(lora_a, a=math.sqrt(5))


def init_expert_up_projections_(lora_b: torch.Tensor) -> None:
    """Stacked B_e: zeros, so a fresh adapter leaves the base model's outputs unchanged."""
    nn.init.zeros_(lora_b)


def init_router_(router: nn.Linear, how: str) -> None:
    """`default`: nn.Linear's own init, kept. `normal`: weights N(0, 1) as the authors (bias kept),
    so each task's gates start far from uniform."""
    if how == "normal":
        nn.init.normal_(router.weight, mean=0.0, std=1.0)


def adapter_input_dropout(p: float) -> nn.Module:
    """Dropout on the adapter's input, or the identity when p is 0 (no copy in training)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class TaskRouting(nn.Module):
    """What every TMoLE layer of one model shares: the task table, the kind mask, the batch's tasks.

    `task_ids` and `experts` (the experts some sample of the batch may use, `kind_experts`) are
    set by `routed()` — `TMoLEAdapter.route()` — for the forwards inside its block, with
    `scale_cache`: the layers' gate scales computed without autograd in this block (module doc).
    """

    def __init__(
        self, cfg: TMoLEConfig, dtype: torch.dtype, device: torch.device | None = None
    ) -> None:
        super().__init__()
        self.task_embedding = nn.Parameter(
            torch.empty(NUM_TASKS, cfg.task_embedding_dim, dtype=dtype, device=device)
        )
        init_task_embeddings_(self.task_embedding)
        self.register_buffer("expert_logit_mask", expert_logit_mask(cfg, dtype).to(device))
        self.config = cfg
        self.task_ids: torch.Tensor | None = None
        self.experts = kind_experts(cfg, ())
        self.scale_cache: dict[tuple[int, int], torch.Tensor] = {}

    @contextlib.contextmanager
    def routed(self, task_ids: torch.Tensor) -> Iterator[None]:
        """Inside the block, sample i is of task task_ids[i] (one id broadcasts); restored after."""
        # The kinds are read once per block on the host, not in every layer's forward.
        kinds = {TASKS[t].kind for t in task_ids.unique().tolist()}
        previous = self.task_ids, self.experts, self.scale_cache
        self.task_ids, self.experts = task_ids, kind_experts(self.config, kinds)
        self.scale_cache = {}
        try:
            yield
        finally:
            self.task_ids, self.experts, self.scale_cache = previous

    def checkpoint_contexts(self) -> tuple[contextlib.AbstractContextManager, ...]:
        """torch.utils.checkpoint's `context_fn`: nothing around a checkpointed forward, and
        around its recompute the routing that forward ran under (the backward that recomputes
        it runs after the `routed` block has closed, or inside another micro-batch's)."""
        if self.task_ids is None:  # the layer itself raises, naming the missing route()
            return contextlib.nullcontext(), contextlib.nullcontext()
        return contextlib.nullcontext(), self.routed(self.task_ids)

    def current_task_ids(self, batch_size: int) -> torch.Tensor:
        """The routed task ids for a batch of `batch_size` (a single id broadcasts)."""
        if self.task_ids is None:
            raise RuntimeError(
                "a TMoLE layer ran outside `adapter.route(task_ids)`: wrap the forward in "
                "`with adapter.route(task_ids):` (a checkpointed layer's recompute re-enters it "
                "through the adapter's `checkpoint_contexts`)"
            )
        if self.task_ids.numel() == 1:
            return self.task_ids.expand(batch_size)
        if self.task_ids.numel() != batch_size:
            raise ValueError(
                f"route() got {self.task_ids.numel()} task ids for a batch of {batch_size} samples"
            )
        return self.task_ids


class TMoLELinear(nn.Module):
    """y = W x + Σ_e g_e(t)·(α/r)·B_e A_e x, with g(t) = softmax(router(task_table[t]) + mask[t]).

    `base` is the frozen original linear layer; `lora_a` (E·r × in) and `lora_b` (out × E·r) hold
    the stacked experts; `router` maps a task embedding to E logits. Parameters take the base
    weight's dtype and device.
    """

    def __init__(self, base: nn.Linear, routing: TaskRouting, cfg: TMoLEConfig) -> None:
        super().__init__()
        self.num_experts = sum(expert_group_sizes(cfg))
        self.rank = cfg.rank
        self.scaling = cfg.alpha / cfg.rank
        weight = base.weight
        self.base = base
        stacked_rank = self.num_experts * self.rank
        like_base = {"dtype": weight.dtype, "device": weight.device}
        self.lora_a = nn.Parameter(torch.empty(stacked_rank, base.in_features, **like_base))
        self.lora_b = nn.Parameter(torch.empty(base.out_features, stacked_rank, **like_base))
        self.router = nn.Linear(cfg.task_embedding_dim, self.num_experts, **like_base)
        self.dropout = adapter_input_dropout(cfg.dropout)
        init_expert_down_projections_(self.lora_a)
        init_expert_up_projections_(self.lora_b)
        init_router_(self.router, cfg.router_init)
        # Kept out of the module tree: the table belongs to the model once, not to every layer.
        self._routing = (routing,)

    @property
    def routing(self) -> TaskRouting:
        return self._routing[0]

    @property
    def weight(self) -> torch.Tensor:
        """The base weight, for code that inspects `layer.weight` (dtype, device, shape)."""
        return self.base.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base.bias

    def task_gates(self, task_ids: torch.Tensor) -> torch.Tensor:
        """g(t) for each id: (len(task_ids) × E), masked by task kind, rows summing to 1."""
        logits = self.router(self.routing.task_embedding[task_ids])
        return (logits + self.routing.expert_logit_mask[task_ids]).softmax(dim=-1)

    def rank_block_scales(self, task_ids: torch.Tensor) -> torch.Tensor:
        """(batch × E·r): g_e(t)·α/r repeated over the r rows of expert e's block."""
        return (self.task_gates(task_ids) * self.scaling).repeat_interleave(self.rank, dim=-1)

    def expert_rows(self, experts: slice) -> slice:
        """The rank rows of A (columns of B) that hold these experts."""
        return slice(experts.start * self.rank, experts.stop * self.rank)

    def routed_scales(self, task_ids: torch.Tensor) -> torch.Tensor:
        """`rank_block_scales` of the routed batch; without autograd, once per routed block and
        batch size (module docstring)."""
        if torch.is_grad_enabled():
            return self.rank_block_scales(task_ids)
        key = (id(self), task_ids.shape[0])
        cache = self.routing.scale_cache
        if key not in cache:
            cache[key] = self.rank_block_scales(task_ids)
        return cache[key]

    def adapter_delta(
        self, x: torch.Tensor, task_ids: torch.Tensor, experts: slice
    ) -> torch.Tensor:
        """Σ_e g_e(t)(α/r) B_e A_e dropout(x) over `experts` (those with a nonzero gate)."""
        rows = self.expert_rows(experts)
        scales = self.routed_scales(task_ids)[:, rows]
        scales = scales.view(x.shape[0], *([1] * (x.dim() - 2)), scales.shape[-1])
        down = F.linear(self.dropout(x), self.lora_a[rows])
        return F.linear(down * scales, self.lora_b[:, rows])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        task_ids = self.routing.current_task_ids(x.shape[0])
        return self.base(x) + self.adapter_delta(x, task_ids, self.routing.experts)

    def extra_repr(self) -> str:
        return f"experts={self.num_experts}, rank={self.rank}, scaling={self.scaling:g}"
