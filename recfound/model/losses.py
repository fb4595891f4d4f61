"""The losses: InfoNCE for the embedding tasks (hard and in-batch negatives), and the
per-sample LM cross-entropy for generative batches averaged by sample.

The token-averaged generative loss is the LM's own (RecFoundModel.generative_loss); the
training objective (recfound.train.objective) assembles L = L_emb + λ·L_gen.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from recfound.model.prompts import IGNORE_INDEX


def gather_with_grad(local: torch.Tensor) -> torch.Tensor:
    """Concatenate `local` from every process (rank order); gradient flows to the local part.

    `all_gather` returns detached copies, so this rank's slot is replaced by the tensor itself:
    each rank back-propagates through its own passages, as in GritLM / DPR training.
    With one process it returns `local` unchanged.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local.contiguous())
    parts[dist.get_rank()] = local
    return torch.cat(parts, dim=0)


def info_nce(
    query_emb: torch.Tensor,
    passage_emb: torch.Tensor,
    group_size: int,
    temperature: float,
) -> torch.Tensor:
    """InfoNCE over one positive, `group_size - 1` hard negatives and all in-batch passages.

    query_emb: (Q, d); passage_emb: (Q·group_size, d) laid out per query as
    [q0 pos, q0 neg1 .. neg(G-1), q1 pos, ...]. Embeddings are expected unit-norm, so the dot
    product is the cosine similarity. With P the passages of all processes and p⁺(i) query i's
    positive:

        L = -(1/Q) Σ_i log( exp(q_i·p⁺(i)/τ) / Σ_{p∈P} exp(q_i·p/τ) )
    """
    queries, passages = query_emb.shape[0], passage_emb.shape[0]
    if passages != queries * group_size:
        raise ValueError(
            f"expected {queries} x group_size {group_size} = {queries * group_size} passages, "
            f"got {passages}"
        )
    all_passages = gather_with_grad(passage_emb)
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    # This rank's passages start at rank·passages in the gathered matrix.
    targets = rank * passages + torch.arange(queries, device=query_emb.device) * group_size
    scores = query_emb @ all_passages.T / temperature
    return F.cross_entropy(scores, targets)


def per_sample_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's mean next-token cross-entropy over its response tokens, shape (B,).

    ℓ_i = (1/|R_i|) Σ_{t∈R_i} −log p(labels[i, t] | tokens < t), R_i the positions whose label
    is not IGNORE_INDEX after the causal shift; a sample without response tokens gets 0.
    """
    targets = labels[:, 1:]
    # fp32 cross-entropy under bf16 autocast, as transformers' own LM loss does
    per_token = F.cross_entropy(
        logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX, reduction="none"
    )
    counts = (targets != IGNORE_INDEX).sum(dim=1)
    return per_token.sum(dim=1) / counts.clamp(min=1)
