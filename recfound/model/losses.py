"""The losses: InfoNCE for the embedding tasks (hard and in-batch negatives, gathered across
processes), and the per-sample LM cross-entropy of generative batches.

The training objective (recfound.train.objective) assembles L = L_emb + λ·L_gen from these
per-sample losses; the token-averaged generative loss is the LM's own
(RecFoundModel.generative_loss).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from recfound.model.prompts import IGNORE_INDEX


def process_rank_and_count() -> tuple[int, int]:
    """(this process's rank, number of processes); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _ScaleGradient(torch.autograd.Function):
    """Identity in the forward pass; multiplies the gradient by `factor` in the backward."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, factor: float):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        return grad * ctx.factor, None


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate `local` from every process (rank order), for a loss every process computes
    alike over the whole gathered batch; with one process, `local` unchanged.

    `all_gather` returns detached copies, so this rank's slot is `local` itself: each process
    back-propagates into its own part only. Every process computes the same loss L, and DDP
    averages parameter gradients over the N processes, so the local part's gradient is
    multiplied by N: the average (1/N) Σ_r N·∂L/∂e_r·∂e_r/∂θ = ∂L/∂θ, the gradient of the
    single-process loss over the whole batch. (GritLM multiplies the loss by N instead, which
    would scale the logged value as well.)
    """
    rank, world = process_rank_and_count()
    if world == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(parts, local.contiguous())
    parts[rank] = _ScaleGradient.apply(local, float(world))
    return torch.cat(parts, dim=0)


def info_nce_per_query(
    query_emb: torch.Tensor,
    passage_emb: torch.Tensor,
    group_size: int,
    temperature: float,
    across_processes: bool = True,
    passage_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-query InfoNCE over one positive, `group_size - 1` hard negatives and all in-batch
    passages, for the queries of every process: shape (N·Q,), rank-major.

    query_emb: (Q, d); passage_emb: (Q·group_size, d) laid out per query as
    [q0 pos, q0 neg1 .. neg(G-1), q1 pos, ...]. Embeddings are expected unit-norm, so the dot
    product is the cosine similarity. With `across_processes` both queries and passages are
    gathered from the N processes (`gather_with_grad`, as GritLM), so every process scores all
    N·Q queries against all N·Q·G passages P; otherwise N counts as 1 (this process's batch
    only, e.g. validation, where processes run different rows). Query j's positive is then
    passage j·G, and

        ℓ_j = −log( exp(q_j·p_{jG}/τ) / Σ_{p∈P} exp(q_j·p/τ) ).

    `passage_log_q` (Q·G,): log Q_p of each passage, subtracted from every logit q_j·p/τ (the
    logQ correction, recfound.train.logq), gathered like the passages.
    """
    queries, passages = query_emb.shape[0], passage_emb.shape[0]
    if passages != queries * group_size:
        raise ValueError(
            f"expected {queries} x group_size {group_size} = {queries * group_size} passages, "
            f"got {passages}"
        )
    if across_processes:
        query_emb, passage_emb = gather_with_grad(query_emb), gather_with_grad(passage_emb)
        if passage_log_q is not None:
            passage_log_q = gather_with_grad(passage_log_q)
    targets = torch.arange(query_emb.shape[0], device=query_emb.device) * group_size
    # fp32 softmax under bf16 autocast: scores / τ with τ = 0.02 reach ±50
    scores = (query_emb @ passage_emb.T).float() / temperature
    if passage_log_q is not None:
        scores = scores - passage_log_q.float().to(scores.device)
    return F.cross_entropy(scores, targets, reduction="none")


def info_nce(
    query_emb: torch.Tensor,
    passage_emb: torch.Tensor,
    group_size: int,
    temperature: float,
    passage_log_q: torch.Tensor | None = None,
) -> torch.Tensor:
    """The mean of `info_nce_per_query` over all queries of all processes (logQ-corrected
    with `passage_log_q`):

    L = −(1/(N·Q)) Σ_j log( exp(q_j·p_{jG}/τ) / Σ_{p∈P} exp(q_j·p/τ) ),

    the same value on every process, and (after DDP's gradient averaging) the gradient of the
    single-process loss over the whole batch.
    """
    return info_nce_per_query(
        query_emb, passage_emb, group_size, temperature, passage_log_q=passage_log_q
    ).mean()


def response_token_counts(labels: torch.Tensor) -> torch.Tensor:
    """|R_i| per sample, shape (B,): labels after the causal shift that are not ignored."""
    return (labels[:, 1:] != IGNORE_INDEX).sum(dim=1)


def response_positions(labels: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: the positions t whose next token labels[:, t+1] is a response token, i.e.
    the only logits the LM loss reads (a 400-token prompt with a one-letter answer needs one)."""
    positions = torch.zeros_like(labels, dtype=torch.bool)
    positions[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    return positions


def per_sample_lm_loss(response_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's mean next-token cross-entropy over its response tokens, shape (B,).

    ℓ_i = (1/|R_i|) Σ_{t∈R_i} −log p(labels[i, t+1] | tokens ≤ t), R_i = the True positions of
    row i in `response_positions(labels)`; a sample without response tokens gets 0.
    `response_logits` (N, V) holds the logits at exactly those positions, row-major (what
    transformers returns for `logits_to_keep=response_positions(labels)`).
    """
    positions = response_positions(labels)
    targets = labels[:, 1:][positions[:, :-1]]
    # fp32 cross-entropy under bf16 autocast, as transformers' own LM loss does
    per_token = F.cross_entropy(response_logits.float(), targets, reduction="none")
    sums = per_token.new_zeros(labels.shape[0]).index_add(0, positions.nonzero()[:, 0], per_token)
    return sums / response_token_counts(labels).clamp(min=1)
