"""The multi-task objective L = L_emb + λ·L_gen, its per-task breakdown, validation losses.

`MultiTaskObjective` is an nn.Module whose forward is one whole micro-batch, so DDP (via
accelerate) sees a single forward per step and synchronises gradients as usual.

* L_emb = recfound.model.losses.info_nce over the micro-batch's queries, their positives and
  hard negatives, with all passages (of all ranks) as in-batch negatives.
* L_gen = Σ_t n_t·L_t / Σ_t n_t over the micro-batch's per-task sub-batches, by
  `train.loss_gen_reduction`:
  - "token": L_t the LM cross-entropy averaged over task t's response tokens, n_t their number:
    exactly the token mean over the whole batch. A one-letter answer (SR, SA, PRP) then weighs
    1/60 of a user profile.
  - "sample": L_t the mean over task t's samples of each sample's own token mean, n_t the
    samples: every answer weighs the same, however long.
  Computed per task so the per-task losses come without extra passes.

Per-task embedding losses (for the curves) and S2Sched's validation losses use
`local_info_nce`, the same InfoNCE restricted to this process's passages: `info_nce` gathers
across ranks (ranks would have to run identical validation shapes) and returns only the mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from recfound.model.losses import info_nce
from recfound.model.prompts import IGNORE_INDEX
from recfound.model.unified import RecFoundModel
from recfound.tasks import NUM_TASKS, TASKS
from recfound.train.batches import Batch, BatchEncoder, move_to

GenReduction = Literal["token", "sample"]


def local_info_nce(
    query_emb: torch.Tensor, passage_emb: torch.Tensor, group_size: int, temperature: float
) -> torch.Tensor:
    """Per-query InfoNCE (Q,) over this process's passages only.

    ℓ_i = −log( exp(q_i·p⁺(i)/τ) / Σ_p exp(q_i·p/τ) ), p⁺(i) = passage i·group_size.
    """
    targets = torch.arange(query_emb.shape[0], device=query_emb.device) * group_size
    scores = query_emb @ passage_emb.T / temperature
    return F.cross_entropy(scores.float(), targets, reduction="none")


def response_tokens(labels: torch.Tensor) -> torch.Tensor:
    """Number of predicted tokens: labels after the causal shift that are not ignored."""
    return (labels[:, 1:] != IGNORE_INDEX).sum()


def answered(labels: torch.Tensor) -> torch.Tensor:
    """Which samples have at least one predicted token (a response not cut by truncation)."""
    return (labels[:, 1:] != IGNORE_INDEX).any(dim=1)


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

    def forward(
        self, embedding: Batch | None, generative: Sequence[Batch]
    ) -> dict[str, torch.Tensor]:
        """Returns loss (with grad), loss_emb, loss_gen, and per task (detached, length 13):
        task_loss_sum (Σ of per-query losses / weighted generative losses) and task_weight
        (queries / response tokens or samples), so sums over micro-batches and ranks stay exact."""
        device = next(p for p in self.model.parameters()).device
        task_sum = torch.zeros(NUM_TASKS, dtype=torch.float64, device=device)
        task_weight = torch.zeros(NUM_TASKS, dtype=torch.float64, device=device)
        loss_emb = torch.zeros((), device=device)
        loss_gen = torch.zeros((), device=device)
        if embedding is not None:
            q = self.model.embed(**embedding["queries"], task_ids=embedding["query_task_ids"])
            p = self.model.embed(**embedding["passages"], task_ids=embedding["passage_task_ids"])
            loss_emb = info_nce(q, p, self.group_size, self.temperature)
            with torch.no_grad():
                per_query = local_info_nce(q, p, self.group_size, self.temperature).double()
                tasks = embedding["query_task_ids"]
                task_sum.index_add_(0, tasks, per_query)
                task_weight.index_add_(0, tasks, torch.ones_like(per_query))
        weighted, weights = [], []
        for batch in generative:
            n = self._weight(batch["labels"])
            if int(n) == 0:
                continue
            loss_t = self._generative_loss(batch)
            weighted.append(loss_t * n)
            weights.append(n)
            task = int(batch["task_ids"][0])
            task_sum[task] += loss_t.detach().double() * n
            task_weight[task] += n.double()
        if weights:
            loss_gen = torch.stack(weighted).sum() / torch.stack(weights).sum()
        return {
            "loss": loss_emb + self.gen_factor * loss_gen,
            "loss_emb": loss_emb.detach(),
            "loss_gen": loss_gen.detach(),
            "task_loss_sum": task_sum,
            "task_weight": task_weight,
        }

    def _weight(self, labels: torch.Tensor) -> torch.Tensor:
        """n_t of the module docstring: response tokens, or samples with a response."""
        return response_tokens(labels) if self.gen_reduction == "token" else answered(labels).sum()

    def _generative_loss(self, batch: Batch) -> torch.Tensor:
        """L_t of the module docstring for one task's sub-batch."""
        args = (batch["input_ids"], batch["attention_mask"], batch["labels"], batch["task_ids"])
        if self.gen_reduction == "token":
            return self.model.generative_loss(*args)
        per_sample = self.model.generative_loss(*args, per_sample=True)
        return per_sample[answered(batch["labels"])].mean()


@torch.no_grad()
def task_validation_loss(
    model: RecFoundModel,
    encoder: BatchEncoder,
    rows: Sequence[int],
    task_id: int,
    batch_size: int,
    temperature: float,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> float:
    """Validation loss of one task over `rows`, in chunks of `batch_size` (no gradient).

    Embedding tasks: mean per-query InfoNCE (in-batch negatives within a chunk); generative
    tasks: response-token mean cross-entropy. NaN when `rows` is empty.
    """
    device = next(p for p in model.parameters()).device
    total, weight = 0.0, 0.0
    for start in range(0, len(rows), batch_size):
        chunk = list(rows[start : start + batch_size])
        with autocast():
            if TASKS[task_id].is_embedding:
                batch = move_to(encoder.embedding(chunk), device)
                q = model.embed(**batch["queries"], task_ids=batch["query_task_ids"])
                p = model.embed(**batch["passages"], task_ids=batch["passage_task_ids"])
                losses = local_info_nce(q, p, encoder.cfg.group_size, temperature)
                total += float(losses.double().sum())
                weight += len(chunk)
                continue
            for batch in move_to(encoder.generative(chunk), device):
                n = int(response_tokens(batch["labels"]))
                if n == 0:
                    continue
                loss = model.generative_loss(
                    batch["input_ids"], batch["attention_mask"], batch["labels"], batch["task_ids"]
                )
                total += float(loss) * n
                weight += n
    return total / weight if weight else float("nan")


def validation_losses(
    model: RecFoundModel,
    encoder: BatchEncoder,
    rows: Mapping[int, Sequence[int]],
    tasks: Sequence[int],
    batch_size: int,
    temperature: float,
    autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
) -> dict[int, float]:
    """`task_validation_loss` for each task in `tasks` (the model's train/eval mode unchanged)."""
    return {
        t: task_validation_loss(model, encoder, rows[t], t, batch_size, temperature, autocast)
        for t in tasks
    }
