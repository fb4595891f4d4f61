"""What tests/test_gradcache.py and the processes it starts share: a tiny TMoLE objective with
dropout, seeded micro-batches, and the gradients of one big batch and of an accumulated window."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from recfound.config import Config
from recfound.model.adapters import attach_adapter
from recfound.model.inference import load_recfound
from recfound.model.losses import info_nce
from recfound.model.prompts import IGNORE_INDEX
from recfound.model.tmole import TMoLELinear
from recfound.train.batches import PASSAGE_LOG_Q, Batch
from recfound.train.grad_cache import GradCache
from recfound.train.objective import MultiTaskObjective

GROUP_SIZE = 2
QUERIES_PER_MICRO_BATCH = 2
GENERATIVE_PER_MICRO_BATCH = 2
TEMPERATURE = 0.05
GEN_FACTOR = 0.5
TOKEN_IDS = (3, 300)  # ids drawn from here: no special tokens (0-2) of the tiny tokenizer
PAD_ID = 0


def tiny_objective(model_dir: str | Path, dropout: float) -> MultiTaskObjective:
    """The tiny Llama with TMoLE (adapter input dropout `dropout`, routers N(0, 1)) in training
    mode; B is random (it starts at 0) so every adapter parameter gets a gradient."""
    cfg = Config.model_validate({"model": {"tmole": {"dropout": dropout, "router_init": "normal"}}})
    model, _ = load_recfound(model_dir, None, cfg, device="cpu")
    torch.manual_seed(0)
    model.adapter = attach_adapter(model.lm, cfg.model)
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, TMoLELinear):
                layer.lora_b.normal_(std=0.2)
    model.train()
    return MultiTaskObjective(model, GROUP_SIZE, TEMPERATURE, GEN_FACTOR)


def _texts(gen: torch.Generator, n: int, max_len: int) -> dict[str, torch.Tensor]:
    """n right-padded random texts of 3..max_len tokens."""
    lengths = torch.randint(3, max_len + 1, (n,), generator=gen)
    width = int(lengths.max())
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = torch.randint(*TOKEN_IDS, (n, width), generator=gen) * mask + PAD_ID * (1 - mask)
    return {"input_ids": ids, "attention_mask": mask, "pool_mask": mask.clone()}


def micro_batches(count: int, seed: int = 0, log_q: bool = False) -> list[Batch]:
    """`count` micro-batches of embedding queries (tasks 0-2) with their passages (and, with
    `log_q`, a random logQ correction per passage), and generative samples (tasks 3-12, the
    response after position 4)."""
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        tasks = torch.randint(0, 3, (QUERIES_PER_MICRO_BATCH,), generator=gen)
        embedding = {
            "queries": _texts(gen, QUERIES_PER_MICRO_BATCH, 9),
            "passages": _texts(gen, QUERIES_PER_MICRO_BATCH * GROUP_SIZE, 7),
            "query_task_ids": tasks,
            "passage_task_ids": tasks.repeat_interleave(GROUP_SIZE),
        }
        if log_q:  # log Q of popular (−1) to rare (−6) items
            draws = torch.rand(QUERIES_PER_MICRO_BATCH * GROUP_SIZE, generator=gen)
            embedding[PASSAGE_LOG_Q] = -1 - 5 * draws
        text = _texts(gen, GENERATIVE_PER_MICRO_BATCH, 10)
        labels = text["input_ids"].masked_fill(text["attention_mask"] == 0, IGNORE_INDEX)
        labels[:, :4] = IGNORE_INDEX
        generative = {
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "labels": labels,
            "task_ids": torch.randint(3, 13, (GENERATIVE_PER_MICRO_BATCH,), generator=gen),
        }
        batches.append({"embedding": embedding, "generative": [generative]})
    return batches


def adapter_gradients(objective: MultiTaskObjective) -> dict[str, torch.Tensor]:
    """The accumulated gradient of every adapter parameter; the gradients are reset."""
    adapter = objective.model.adapter
    grads = {n: p.grad.detach().clone() for n, p in adapter.named_trainable_parameters().items()}
    objective.zero_grad(set_to_none=True)
    return grads


def big_batch_loss(
    objective: MultiTaskObjective, per_process: Sequence[Sequence[Batch]], seeds: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, L_emb) with a graph: L_emb = InfoNCE over the queries and passages of every
    micro-batch of every process, L = L_emb + λ·(the mean of the micro-batches' L_gen).
    Process r's forwards run from seed r in the order a GradCache step draws random numbers:
    its embeddings first, then its generative forwards."""
    queries, passages, gen_losses = [], [], []
    for batches, seed in zip(per_process, seeds, strict=True):
        torch.manual_seed(seed)
        for batch in batches:
            q, p = objective.embed(batch["embedding"])
            queries.append(q)
            passages.append(p)
        gen_losses += [objective(None, b["generative"])["backward"] for b in batches]
    corrections = [b["embedding"].get(PASSAGE_LOG_Q) for bs in per_process for b in bs]
    log_q = None if None in corrections else torch.cat(corrections)
    emb = info_nce(torch.cat(queries), torch.cat(passages), GROUP_SIZE, TEMPERATURE, log_q)
    return emb + torch.stack(gen_losses).mean(), emb.detach()


def accumulate_window(
    objective: MultiTaskObjective, batches: Sequence[Batch], seed: int, grad_cache: bool
) -> torch.Tensor:
    """One step's backward over `batches` as the training loop runs it (accelerate divides each
    micro-batch's loss by their number k); returns the logged loss_emb, averaged."""
    torch.manual_seed(seed)
    k = len(batches)
    cached = (
        GradCache(objective, nullcontext, k).cache_window([b["embedding"] for b in batches])
        if grad_cache
        else [None] * k
    )
    logged = []
    for batch, share in zip(batches, cached, strict=True):
        out = objective(**batch, cached=share)
        (out["backward"] / k).backward()
        logged.append(out["loss_emb"])
    return torch.stack(logged).mean()


def linear_problem(world: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(W, query inputs, passage inputs) for embeddings normalize(x @ W) of `world` halves."""
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 8, generator=gen).requires_grad_(True)
    x_queries = torch.randn(world * QUERIES_PER_MICRO_BATCH, 8, generator=gen)
    x_passages = torch.randn(world * QUERIES_PER_MICRO_BATCH * GROUP_SIZE, 8, generator=gen)
    return weight, x_queries, x_passages


def linear_embed(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x @ weight, dim=-1)
