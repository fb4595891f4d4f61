"""The multi-task objective L = L_emb + λ·L_gen: the one loss definition of training, of
S2Sched's validation and of merge's checkpoint selection.

Every loss is kept per sample, with the sample's task id, as a pair (s_i, w_i) — a loss sum and
a weight (`SampleLosses`). A set S of samples (a task's samples in a batch, a kind's, a task's
validation rows) has the loss

    L(S) = Σ_{i∈S} s_i / Σ_{i∈S} w_i,

so per-task losses are index_adds by task id: the same whether a micro-batch's generative rows
come as one mixed batch (a per-sample `task_ids` tensor) or as one sub-batch per task, and sums
over micro-batches, chunks and processes stay exact.

* Embedding sample (a query): s_i = ℓ_i, its InfoNCE (recfound.model.losses.info_nce_per_query:
  one positive, group_size − 1 hard negatives, every other passage of the batch as in-batch
  negative), w_i = 1. In training the batch is that of all processes (queries and passages
  gathered) and, with `train.grad_cache`, of the whole accumulation window
  (recfound.train.grad_cache).
* Generative sample, by `train.loss_gen_reduction`, with R_i its response tokens and CE_t the
  next-token cross-entropy:
  - "token": s_i = Σ_{t∈R_i} CE_t, w_i = |R_i|: L_gen is the token mean of the batch, so a
    one-letter answer (SR, SA, PRP) weighs 1/60 of a user profile;
  - "sample": s_i = (1/|R_i|) Σ_{t∈R_i} CE_t, w_i = [|R_i| > 0]: every answer weighs the same,
    however long.

A micro-batch's L_emb is L(its queries) — over all processes' queries, the same value on every
process — and L_gen = L(its generative samples); a kind without samples contributes 0.

Validation (`validation_losses`) is L(task t's validation rows) per task, without gradient, the
rows of all tasks of a kind run together in chunks of `batch_size` (in-batch negatives: the
chunk's passages, whatever their task).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from recfound.config import Config
from recfound.model.losses import (
    info_nce_per_query,
    process_rank_and_count,
    response_token_counts,
)
from recfound.model.unified import RecFoundModel
from recfound.progress import progress
from recfound.tasks import NUM_TASKS, Kind
from recfound.train.batches import PASSAGE_LOG_Q, Batch, BatchEncoder, move_to
from recfound.train.s2sched import POOL_KINDS, task_groups

GenReduction = Literal["token", "sample"]
Autocast = Callable[[], AbstractContextManager[Any]]


@dataclass(frozen=True)
class SampleLosses:
    """Per-sample losses: sample i adds `loss_sum[i]` (s_i) and `weight[i]` (w_i) to task
    `task_ids[i]`. Weights are counts (queries, tokens or answered samples), so a non-zero total
    weight is at least 1."""

    task_ids: torch.Tensor  # (n,) long
    loss_sum: torch.Tensor  # (n,) may carry a gradient
    weight: torch.Tensor  # (n,)

    @staticmethod
    def cat(parts: Sequence[SampleLosses]) -> SampleLosses:
        return SampleLosses(
            torch.cat([p.task_ids for p in parts]),
            torch.cat([p.loss_sum for p in parts]),
            torch.cat([p.weight for p in parts]),
        )

    def split(self, sizes: Sequence[int]) -> list[SampleLosses]:
        """Consecutive parts of `sizes` samples each (the inverse of `cat`)."""
        columns = (t.split(list(sizes)) for t in (self.task_ids, self.loss_sum, self.weight))
        return [SampleLosses(*part) for part in zip(*columns, strict=True)]

    def mean(self) -> torch.Tensor:
        """L = Σ s_i / Σ w_i, and 0 when every weight is 0 (then every s_i is 0 too, so
        clamping the denominator at 1 gives 0 without a branch)."""
        return self.loss_sum.sum() / self.weight.sum().clamp(min=1)

    def per_task(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Σ s_i, Σ w_i) per task id, float64 (NUM_TASKS,), detached."""
        sums = torch.zeros(NUM_TASKS, dtype=torch.float64, device=self.loss_sum.device)
        weights = torch.zeros_like(sums)
        sums.index_add_(0, self.task_ids, self.loss_sum.detach().double())
        weights.index_add_(0, self.task_ids, self.weight.double())
        return sums, weights


# --- a micro-batch replayed from a GradCache window (recfound.train.grad_cache builds the window;
# the objective's forward replays each micro-batch from its share, so the share is defined here)


@dataclass(frozen=True)
class RngState:
    """The CPU generator's state and, on a CUDA device, that device's generator's."""

    cpu: torch.Tensor
    device: torch.device
    cuda: torch.Tensor | None

    @classmethod
    def capture(cls, device: torch.device) -> RngState:
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return cls(torch.get_rng_state(), device, cuda)

    @contextmanager
    def replay(self) -> Iterator[None]:
        """Run the block from this state; afterwards the generators are as before the block."""
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


@dataclass(frozen=True)
class CachedEmbeddings:
    """One micro-batch's share of a cached window: what its replay needs."""

    rng: RngState  # before the micro-batch's cached forward
    query_grad: torch.Tensor  # g_m of its queries, fp32
    passage_grad: torch.Tensor  # g_m of its passages, fp32
    window_loss: torch.Tensor  # L of the whole window, detached
    samples: SampleLosses  # its queries' ℓ_i within the window (the per-task logs)
    accumulation: int  # k

    def surrogate(self, queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
        """k·(⟨g_q, q⟩ + ⟨g_p, p⟩): a meaningless value whose gradient is k·g_m·∂e_m/∂θ."""
        inner = (queries.float() * self.query_grad).sum() + (
            passages.float() * self.passage_grad
        ).sum()
        return self.accumulation * inner


def answered(labels: torch.Tensor) -> torch.Tensor:
    """Which samples have at least one predicted token (a response not cut by truncation)."""
    return response_token_counts(labels) > 0


class MultiTaskObjective(nn.Module):
    """forward(embedding, generative) -> losses of one micro-batch (see module docstring)."""

    def __init__(
        self,
        model: RecFoundModel,
        group_size: int,
        temperature: float,
        gen_factor: float,
        gen_reduction: GenReduction = "token",
    ) -> None:
        super().__init__()
        self.model = model
        self.group_size = group_size
        self.temperature = temperature
        self.gen_factor = gen_factor
        self.gen_reduction = gen_reduction

    @classmethod
    def from_config(cls, model: RecFoundModel, cfg: Config) -> MultiTaskObjective:
        """The objective as training defines it: `train.*` and `model.temperature`."""
        train = cfg.train
        return cls(
            model,
            train.group_size,
            cfg.model.temperature,
            train.loss_gen_factor,
            train.loss_gen_reduction,
        )

    def embed(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit-norm (query, passage) embeddings of an embedding batch, routed per task."""
        model = self.model
        queries = model.embed(**batch["queries"], task_ids=batch["query_task_ids"])
        passages = model.embed(**batch["passages"], task_ids=batch["passage_task_ids"])
        return queries, passages

    def embedding_losses(
        self,
        queries: torch.Tensor,
        passages: torch.Tensor,
        task_ids: torch.Tensor,
        across_processes: bool = True,
        passage_log_q: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, SampleLosses]:
        """(L_emb over the queries of every process, with gradient; this process's queries as
        detached SampleLosses, s_i = ℓ_i, w_i = 1). `passage_log_q`: the batch's logQ
        correction (training batches with `train.logq_correction`; recfound.train.logq)."""
        per_query = info_nce_per_query(
            queries, passages, self.group_size, self.temperature, across_processes, passage_log_q
        )
        rank = process_rank_and_count()[0] if across_processes else 0
        n = queries.shape[0]
        mine = per_query[rank * n : (rank + 1) * n].detach()
        return per_query.mean(), SampleLosses(task_ids, mine, torch.ones_like(mine))

    def generative_losses(self, batch: Batch) -> SampleLosses:
        """(s_i, w_i) of every sample of a generative batch (any mix of tasks), with gradient."""
        labels = batch["labels"]
        mean_ce = self.model.generative_loss(
            batch["input_ids"], batch["attention_mask"], labels, batch["task_ids"], per_sample=True
        )
        tokens = response_token_counts(labels).to(mean_ce.dtype)
        if self.gen_reduction == "token":
            return SampleLosses(batch["task_ids"], mean_ce * tokens, tokens)
        return SampleLosses(batch["task_ids"], mean_ce, answered(labels).to(mean_ce.dtype))

    def forward(
        self,
        embedding: Batch | None,
        generative: Sequence[Batch],
        cached: CachedEmbeddings | None = None,
    ) -> dict[str, torch.Tensor]:
        """One micro-batch. `cached`: its share of a GradCache window (recfound.train.grad_cache),
        whose loss and embedding gradients replace this micro-batch's own InfoNCE.

        Returns `backward` (the tensor to back-propagate), the detached values loss, loss_emb,
        loss_gen, and per task (float64, length 13) task_loss_sum Σ s_i and task_weight Σ w_i of
        this process's samples, so sums over micro-batches and processes stay exact.
        """
        device = next(p for p in self.model.parameters()).device
        zero = torch.zeros((), device=device)
        parts: list[SampleLosses] = []
        loss_emb = backward_emb = zero
        if embedding is not None:
            if cached is None:
                queries, passages = self.embed(embedding)
                backward_emb, own = self.embedding_losses(
                    queries,
                    passages,
                    embedding["query_task_ids"],
                    passage_log_q=embedding.get(PASSAGE_LOG_Q),
                )
                loss_emb = backward_emb.detach()
                parts.append(own)
            else:
                with cached.rng.replay():  # the cached forward's dropout masks
                    queries, passages = self.embed(embedding)
                backward_emb = cached.surrogate(queries, passages)
                loss_emb = cached.window_loss
                parts.append(cached.samples)
        loss_gen = zero
        if generative:
            gen = SampleLosses.cat([self.generative_losses(b) for b in generative])
            loss_gen = gen.mean()
            parts.append(gen)
        task_sum = torch.zeros(NUM_TASKS, dtype=torch.float64, device=device)
        task_weight = torch.zeros_like(task_sum)
        for part in parts:
            sums, weights = part.per_task()
            task_sum += sums
            task_weight += weights
        return {
            "backward": backward_emb + self.gen_factor * loss_gen,
            "loss": loss_emb + self.gen_factor * loss_gen.detach(),
            "loss_emb": loss_emb,
            "loss_gen": loss_gen.detach(),
            "task_loss_sum": task_sum,
            "task_weight": task_weight,
        }


# ----------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class ValidationChunk:
    """Validation rows of one kind that run as one batch."""

    kind: Kind
    rows: list[int]


def validation_chunks(
    rows: Mapping[int, Sequence[int]], tasks: Iterable[int], batch_size: int
) -> list[ValidationChunk]:
    """The rows of `tasks`, kind by kind (embedding first), tasks in id order, cut into chunks of
    at most `batch_size`: a chunk may mix tasks, never kinds. Independent of the process count,
    so the losses do not depend on how chunks are dealt to processes."""
    chunks = []
    for kind, group in zip(POOL_KINDS, task_groups(tasks), strict=True):
        kind_rows = [int(r) for t in group for r in rows[t]]
        for start in range(0, len(kind_rows), batch_size):
            chunks.append(ValidationChunk(kind, kind_rows[start : start + batch_size]))
    return chunks


@torch.no_grad()
def validation_sums(
    objective: MultiTaskObjective,
    encoder: BatchEncoder,
    chunks: Iterable[ValidationChunk],
    autocast: Autocast = nullcontext,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ s_i, Σ w_i) per task id, float64 (NUM_TASKS,), over the rows of `chunks`.

    Embedding chunks score their queries against the chunk's own passages (this process only).
    """
    device = next(p for p in objective.model.parameters()).device
    task_sum = torch.zeros(NUM_TASKS, dtype=torch.float64, device=device)
    task_weight = torch.zeros_like(task_sum)
    for chunk in chunks:
        with autocast():
            if chunk.kind is Kind.EMBEDDING:
                batch = move_to(encoder.embedding(chunk.rows), device)
                queries, passages = objective.embed(batch)
                _, losses = objective.embedding_losses(
                    queries, passages, batch["query_task_ids"], across_processes=False
                )
            else:
                batches = move_to(encoder.generative(chunk.rows), device)
                losses = SampleLosses.cat([objective.generative_losses(b) for b in batches])
        sums, weights = losses.per_task()
        task_sum += sums
        task_weight += weights
    return task_sum, task_weight


def task_losses(
    task_sum: torch.Tensor, task_weight: torch.Tensor, tasks: Iterable[int]
) -> dict[int, float]:
    """L per task of `tasks`: Σ s_i / Σ w_i, NaN for a task without weight (no rows, or no
    response token left after truncation)."""
    return {
        t: float(task_sum[t] / task_weight[t]) if task_weight[t] > 0 else float("nan")
        for t in tasks
    }


def validation_losses(
    objective: MultiTaskObjective,
    encoder: BatchEncoder,
    rows: Mapping[int, Sequence[int]],
    tasks: Sequence[int],
    batch_size: int,
    autocast: Autocast = nullcontext,
    desc: str | None = None,
) -> dict[int, float]:
    """Validation loss of each task of `tasks` over its `rows`, in one process: mixed chunks of
    `batch_size` (`validation_chunks`), no gradient, the model's train/eval mode unchanged.
    With `desc`, a progress bar of that name counts the chunks."""
    chunks = progress(
        validation_chunks(rows, tasks, batch_size),
        desc=desc,
        unit="batch",
        leave=None,
        disable=desc is None,
    )
    return task_losses(*validation_sums(objective, encoder, chunks, autocast), tasks)
