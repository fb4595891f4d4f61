"""GradCache and InfoNCE across processes give the gradient of one big batch, exactly.

- One process, k micro-batches, adapter dropout on: the accumulated adapter gradient with
  `train.grad_cache` equals that of InfoNCE over all k micro-batches at once; without the cache
  (negatives within a micro-batch), or replaying without the cached RNG state, it does not.
- Gradient checkpointing recomputes every decoder layer in the backward, routed as its
  forward was and with the same dropout masks: the same loss and adapter gradients, with and
  without the cache.
- Two processes (gloo): queries and passages gathered, the DDP-averaged gradient equals the
  single-process gradient of the whole batch; gathering passages only would not. The same with
  GradCache over two micro-batches per process.
"""

from __future__ import annotations

import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from gradcache_helpers import (
    GROUP_SIZE,
    TEMPERATURE,
    accumulate_window,
    adapter_gradients,
    big_batch_loss,
    linear_embed,
    linear_problem,
    micro_batches,
    tiny_objective,
)

from recfound.model.losses import info_nce
from recfound.model.tmole import TMoLELinear
from recfound.train.grad_cache import RngState

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

MICRO_BATCHES = 3
SEED = 7
DROPOUT = 0.1
# The cached path sums the same float32 terms in another order than one big graph.
RTOL, ATOL = 1e-4, 1e-6


def assert_gradients_equal(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=RTOL, atol=ATOL, msg=name)


def gradients_equal(got: dict, want: dict) -> bool:
    return all(torch.allclose(got[n], want[n], rtol=RTOL, atol=ATOL) for n in want)


@pytest.fixture(scope="module")
def dropout_objective(tiny_model_dir):
    return tiny_objective(tiny_model_dir, DROPOUT)


def big_batch_gradient(objective, batches) -> tuple[dict, float]:
    """The adapter gradient of one big batch of `batches`, and its InfoNCE."""
    loss, loss_emb = big_batch_loss(objective, [batches], [SEED])
    loss.backward()
    return adapter_gradients(objective), float(loss_emb)


def test_adapter_dropout_is_on(dropout_objective):
    batch = micro_batches(1)[0]["embedding"]
    first, second = dropout_objective.embed(batch)[0], dropout_objective.embed(batch)[0]
    assert not torch.allclose(first, second)  # else the RNG replay below would prove nothing


def test_grad_cache_gives_the_gradient_of_one_big_batch_with_dropout(dropout_objective):
    batches = micro_batches(MICRO_BATCHES)
    want, want_emb = big_batch_gradient(dropout_objective, batches)
    logged = accumulate_window(dropout_objective, batches, SEED, grad_cache=True)
    assert_gradients_equal(adapter_gradients(dropout_objective), want)
    assert float(logged) == pytest.approx(want_emb, rel=1e-5)  # the window's InfoNCE


def test_grad_cache_keeps_the_logq_correction_of_one_big_batch(dropout_objective):
    batches = micro_batches(MICRO_BATCHES, log_q=True)
    want, want_emb = big_batch_gradient(dropout_objective, batches)
    logged = accumulate_window(dropout_objective, batches, SEED, grad_cache=True)
    assert_gradients_equal(adapter_gradients(dropout_objective), want)
    assert float(logged) == pytest.approx(want_emb, rel=1e-5)
    plain, _ = big_batch_gradient(dropout_objective, micro_batches(MICRO_BATCHES))
    assert not gradients_equal(plain, want)  # the correction changes the gradient


def test_replaying_without_the_cached_rng_state_breaks_exactness(dropout_objective, monkeypatch):
    batches = micro_batches(MICRO_BATCHES)
    want, _ = big_batch_gradient(dropout_objective, batches)
    monkeypatch.setattr(RngState, "replay", lambda self: nullcontext())
    accumulate_window(dropout_objective, batches, SEED, grad_cache=True)
    assert not gradients_equal(adapter_gradients(dropout_objective), want)


def test_without_grad_cache_negatives_span_one_micro_batch(tiny_model_dir):
    objective = tiny_objective(tiny_model_dir, dropout=0.0)  # differences come from negatives
    batches = micro_batches(MICRO_BATCHES)
    want, _ = big_batch_gradient(objective, batches)
    accumulate_window(objective, batches, SEED, grad_cache=False)
    assert not gradients_equal(adapter_gradients(objective), want)
    accumulate_window(objective, batches, SEED, grad_cache=True)
    assert_gradients_equal(adapter_gradients(objective), want)


# ------------------------------------------------------------------------- checkpointing


def layer_forwards(objective) -> list[int]:
    """A counter of the forwards of a TMoLE layer of the first decoder layer (transformers
    checkpoints the decoder layer's `forward`, so the recompute calls its sublayers again)."""
    calls = [0]
    decoder_layer = objective.model.lm.get_decoder().layers[0]
    tmole = next(m for m in decoder_layer.modules() if isinstance(m, TMoLELinear))
    tmole.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("grad_cache", [True, False], ids=["grad_cache", "no_grad_cache"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_model_dir, grad_cache):
    """Mixed embedding + generative micro-batches, adapter dropout on, per-sample TMoLE routing:
    the recompute routes as the forward did and draws the same dropout masks."""
    batches = micro_batches(MICRO_BATCHES)
    plain, checkpointed = (tiny_objective(tiny_model_dir, DROPOUT) for _ in range(2))
    checkpointed.model.enable_gradient_checkpointing()
    plain_calls, checkpointed_calls = layer_forwards(plain), layer_forwards(checkpointed)
    want_loss = accumulate_window(plain, batches, SEED, grad_cache)
    got_loss = accumulate_window(checkpointed, batches, SEED, grad_cache)
    assert_gradients_equal(adapter_gradients(checkpointed), adapter_gradients(plain))
    assert float(got_loss) == pytest.approx(float(want_loss), rel=1e-6)
    # every forward with a graph ran again in the backward (GradCache's no-grad pass did not)
    assert checkpointed_calls[0] > plain_calls[0]


def test_a_recompute_outside_the_forwards_routing_is_an_error_naming_route(
    tiny_model_dir, monkeypatch
):
    objective = tiny_objective(tiny_model_dir, DROPOUT)
    no_reentry = (nullcontext(), nullcontext())
    monkeypatch.setattr(type(objective.model.adapter), "checkpoint_contexts", lambda _: no_reentry)
    objective.model.enable_gradient_checkpointing()
    with pytest.raises(RuntimeError, match="outside `adapter.route"):
        accumulate_window(objective, micro_batches(1), SEED, grad_cache=False)


# ------------------------------------------------------------------------- two processes

# One rank of a 2-process gloo group, run as its own interpreter: (a) InfoNCE of a linear
# encoder on this rank's half of the batch; (b) a GradCache step of the tiny TMoLE model over
# this rank's micro-batches. Saves the gradients before any averaging.
_RANK_SCRIPT = """
import sys
import torch, torch.distributed as dist
rank, world, init_file, result, model_dir, tests_dir, k = sys.argv[1:8]
rank, world, k = int(rank), int(world), int(k)
sys.path.insert(0, tests_dir)
from gradcache_helpers import *
from recfound.model.losses import info_nce
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
weight, x_q, x_p = linear_problem(world)
q, p = x_q.chunk(world)[rank], x_p.chunk(world)[rank]
info_nce(linear_embed(weight, q), linear_embed(weight, p), GROUP_SIZE, TEMPERATURE).backward()
objective = tiny_objective(model_dir, dropout=float(sys.argv[8]))
batches = micro_batches(world * k)[rank * k : (rank + 1) * k]
logged = accumulate_window(objective, batches, seed=100 + rank, grad_cache=True)
torch.save(
    {"linear": weight.grad, "adapter": adapter_gradients(objective), "loss_emb": logged},
    result + str(rank),
)
dist.destroy_process_group()
"""

WORLD = 2
PER_RANK = 2


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, tiny_model_dir) -> list[dict]:
    tmp = tmp_path_factory.mktemp("ranks")
    init, result = str(tmp / "init"), str(tmp / "result")
    tests_dir = str(Path(__file__).parent)
    args = [init, result, str(tiny_model_dir), tests_dir, str(PER_RANK), str(DROPOUT)]
    ranks = [
        subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(r), str(WORLD), *args])
        for r in range(WORLD)
    ]
    assert [p.wait(timeout=300) for p in ranks] == [0] * WORLD
    return [torch.load(result + str(r), weights_only=True) for r in range(WORLD)]


def passages_only_gradient(weight, x_q, x_p) -> torch.Tensor:
    """The DDP-averaged gradient when only passages are gathered (the former info_nce): rank r
    scores its own queries against all passages, of which only its own carry a gradient."""
    grads = []
    for rank in range(WORLD):
        q = linear_embed(weight, x_q.chunk(WORLD)[rank])
        parts = [linear_embed(weight, x).detach() for x in x_p.chunk(WORLD)]
        parts[rank] = linear_embed(weight, x_p.chunk(WORLD)[rank])
        passages = torch.cat(parts)
        targets = rank * len(parts[rank]) + torch.arange(len(q)) * GROUP_SIZE
        loss = F.cross_entropy(q @ passages.T / TEMPERATURE, targets)
        grads.append(torch.autograd.grad(loss, weight)[0])
    return torch.stack(grads).mean(0)


def test_gathering_queries_and_passages_gives_the_whole_batch_gradient(two_ranks):
    weight, x_q, x_p = linear_problem(WORLD)
    whole = info_nce(linear_embed(weight, x_q), linear_embed(weight, x_p), GROUP_SIZE, TEMPERATURE)
    want = torch.autograd.grad(whole, weight)[0]
    averaged = torch.stack([r["linear"] for r in two_ranks]).mean(0)  # what DDP does
    torch.testing.assert_close(averaged, want, rtol=RTOL, atol=ATOL)
    assert not torch.allclose(passages_only_gradient(weight, x_q, x_p), want, rtol=0.01)


def test_grad_cache_across_processes_gives_the_whole_batch_gradient(two_ranks, tiny_model_dir):
    objective = tiny_objective(tiny_model_dir, DROPOUT)
    batches = micro_batches(WORLD * PER_RANK)
    per_rank = [batches[r * PER_RANK : (r + 1) * PER_RANK] for r in range(WORLD)]
    # Each rank ran from seed 100 + rank: the single process replays the same dropout masks.
    loss, loss_emb = big_batch_loss(objective, per_rank, [100 + r for r in range(WORLD)])
    loss.backward()
    want = adapter_gradients(objective)
    averaged = {n: torch.stack([r["adapter"][n] for r in two_ranks]).mean(0) for n in want}
    assert_gradients_equal(averaged, want)
    # Every rank logs the InfoNCE of the whole window of both ranks.
    for rank in two_ranks:
        assert float(rank["loss_emb"]) == pytest.approx(float(loss_emb), rel=1e-5)


# One rank of FSDP2 over gloo: every decoder layer and the objective (the root whose forward
# runs, as accelerate shards the module it prepares) `fully_shard`ed; two micro-batches
# accumulated, the first embedding rows only, the second generative rows only, so each kind's
# experts get no gradient in one of them. Saves the full (unsharded, rank-averaged) gradients.
_FSDP_RANK_SCRIPT = """
import sys
import torch, torch.distributed as dist
from torch.distributed.fsdp import fully_shard
rank, world, init_file, result, model_dir, tests_dir = sys.argv[1:7]
rank, world = int(rank), int(world)
sys.path.insert(0, tests_dir)
from gradcache_helpers import *
torch.set_num_threads(1)
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
objective = tiny_objective(model_dir, dropout=0.0)
for layer in objective.model.lm.get_decoder().layers:
    fully_shard(layer)
fully_shard(objective)
batch = micro_batches(world)[rank]
logged = accumulate_window(
    objective, [{"embedding": batch["embedding"], "generative": []},
                {"embedding": None, "generative": batch["generative"]}], seed=0, grad_cache=False
)
grads = {n.removeprefix("lm."): p.grad.full_tensor() for n, p in objective.model.named_parameters()
         if p.grad is not None}
torch.save({"adapter": grads, "loss_emb": logged}, result + str(rank))
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def fsdp_ranks(tmp_path_factory, tiny_model_dir) -> list[dict]:
    tmp = tmp_path_factory.mktemp("fsdp")
    args = [str(tmp / "init"), str(tmp / "result"), str(tiny_model_dir), str(Path(__file__).parent)]
    ranks = [
        subprocess.Popen([sys.executable, "-c", _FSDP_RANK_SCRIPT, str(r), str(WORLD), *args])
        for r in range(WORLD)
    ]
    assert [p.wait(timeout=300) for p in ranks] == [0] * WORLD
    return [torch.load(str(tmp / "result") + str(r), weights_only=True) for r in range(WORLD)]


def test_fsdp2_accumulating_micro_batches_without_some_experts_gives_the_whole_batch_gradient(
    fsdp_ranks, tiny_model_dir
):
    """FSDP2 on CPU/gloo: the reduce-scattered gradient of a window whose first micro-batch
    leaves the generative experts without gradient and whose second the embedding experts is
    the single-process gradient of (InfoNCE over both ranks' queries + λ·mean L_gen) / 2."""
    objective = tiny_objective(tiny_model_dir, dropout=0.0)
    batches = micro_batches(WORLD)
    queries, passages = zip(*(objective.embed(b["embedding"]) for b in batches), strict=True)
    emb = info_nce(torch.cat(queries), torch.cat(passages), GROUP_SIZE, TEMPERATURE)
    gen = torch.stack([objective(None, b["generative"])["backward"] for b in batches]).mean()
    ((emb + gen) / 2).backward()
    want = adapter_gradients(objective)
    for rank in fsdp_ranks:  # every rank holds the same full gradient
        assert_gradients_equal({n: rank["adapter"][n] for n in want}, want)
