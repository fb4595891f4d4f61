"""GradCache: InfoNCE over a whole gradient-accumulation window at the memory of one micro-batch
(Gao et al. 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup";
GritLM and the RecFound authors train this way).

Without it, in-batch negatives come from one micro-batch (of every process), and the step's
gradient is the mean of k = `train.grad_accum` such InfoNCE losses. With it the contrastive
batch is the whole window, k micro-batches × N processes. With e_m = f_θ(x_m) the query and
passage embeddings of this process's micro-batch m:

1. cache: e_m for m = 1..k without a graph (no activations kept), recording the RNG state
   before each forward;
2. loss: L = InfoNCE over the cached queries and passages of every micro-batch and every process
   (both gathered: recfound.model.losses.info_nce_per_query), and g_m = ∂L/∂e_m by autograd on
   the cached tensors alone (the gathering multiplies g_m by N for DDP's averaging);
3. replay: for each m, e_m = f_θ(x_m) again WITH a graph, from the RNG state of step 1 (the same
   dropout masks, hence the same e_m), and back-propagate the surrogate k·⟨g_m, e_m⟩ plus
   λ·L_gen of m as usual. ∂⟨g_m, e_m⟩/∂θ = g_m·∂e_m/∂θ, so over the window the gradient is
   Σ_m ∂L/∂e_m·∂e_m/∂θ = ∂L/∂θ: exactly that of one big batch, for one extra no-grad forward of
   the embeddings. The factor k undoes accelerate's division of each micro-batch's loss by k.

The replay forks the RNG (GradCache's RandContext): on leaving it the generators are back where
they were, so the generative forwards draw the numbers after the whole cache pass and no
dropout mask is used twice.

DDP: each micro-batch still runs one forward (through the DDP-wrapped objective) and one
backward (surrogate and L_gen together) inside `accelerator.accumulate`, so DDP skips the
all-reduce (no_sync) on micro-batches 1..k−1 and averages the gradients once, after the last;
several backward calls per DDP forward would break its reducer. The cache pass runs on the plain
module without a graph, which DDP never sees.

A micro-batch's share of the window (`CachedEmbeddings`, with the `RngState` it replays from)
is the input of the objective's forward, so recfound.train.objective defines it: the objective
needs nothing of this module.

There is no chunk size of its own: the micro-batch is the chunk (its memory is set by
`train.embedding_per_batch`), the window the contrastive batch
(`embedding_per_batch × grad_accum × processes` queries).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recfound.train.batches import PASSAGE_LOG_Q, Batch
from recfound.train.objective import Autocast, CachedEmbeddings, MultiTaskObjective, RngState


class GradCache:
    """Steps 1–2 of the module docstring; the objective's forward does step 3 per micro-batch."""

    def __init__(
        self, objective: MultiTaskObjective, autocast: Autocast, accumulation: int
    ) -> None:
        self.objective = objective  # the plain module, not the DDP wrapper
        self.autocast = autocast
        self.accumulation = accumulation

    def cache_window(self, batches: Sequence[Batch | None]) -> list[CachedEmbeddings | None]:
        """The cached share of each micro-batch's embedding batch (None for None).

        Every process calls this once per step with the same shapes (split_step), since the
        loss gathers across processes; a step's micro-batches all have an embedding part or
        none does.
        """
        present = [b for b in batches if b is not None]
        if not present:
            return [None] * len(batches)
        device = next(p for p in self.objective.parameters()).device
        rngs, queries, passages = [], [], []
        with torch.no_grad():
            for batch in present:
                rngs.append(RngState.capture(device))
                with self.autocast():
                    q, p = self.objective.embed(batch)
                queries.append(q)
                passages.append(p)
        window_q = torch.cat(queries).requires_grad_()
        window_p = torch.cat(passages).requires_grad_()
        task_ids = torch.cat([b["query_task_ids"] for b in present])
        log_q = [b[PASSAGE_LOG_Q] for b in present if PASSAGE_LOG_Q in b]
        with self.autocast():
            loss, samples = self.objective.embedding_losses(
                window_q, window_p, task_ids, passage_log_q=torch.cat(log_q) if log_q else None
            )
        grad_q, grad_p = torch.autograd.grad(loss, [window_q, window_p])
        q_sizes = [q.shape[0] for q in queries]
        p_sizes = [p.shape[0] for p in passages]
        shares = iter(
            zip(
                rngs,
                grad_q.float().split(q_sizes),
                grad_p.float().split(p_sizes),
                samples.split(q_sizes),
                strict=True,
            )
        )
        cached: list[CachedEmbeddings | None] = []
        for batch in batches:
            if batch is None:
                cached.append(None)
                continue
            rng, g_q, g_p, own = next(shares)
            cached.append(CachedEmbeddings(rng, g_q, g_p, loss.detach(), own, self.accumulation))
        return cached
