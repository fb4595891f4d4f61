"""The unified model: bidirectional embedding vs causal generation, pooling, losses, routing."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from recfound.config import ModelConfig, TrainConfig
from recfound.model import prompts as P
from recfound.model.losses import info_nce
from recfound.model.unified import (
    CPU_BF16_ENV,
    RecFoundModel,
    bidirectional_mask,
    native_bf16,
    resolve_dtype,
)
from recfound.train.loop import resolve_mixed_precision

INSTRUCTION = "Represent the user history for retrieving the next item"


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture()
def model(tiny_model_dir) -> RecFoundModel:
    return RecFoundModel(AutoModelForCausalLM.from_pretrained(tiny_model_dir)).eval()


def embedding_batch(tok, texts, instruction=INSTRUCTION, side="right"):
    examples = [P.encode_embedding(tok, instruction, t, 64) for t in texts]
    return P.collate_embedding(examples, tok.pad_token_id, side)


# ----------------------------------------------------------------------------- attention mode


def test_embedding_mode_is_bidirectional_and_generation_mode_is_causal(model):
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    changed = ids.clone()
    changed[0, -1] = 20
    mask = torch.ones_like(ids)
    with torch.no_grad():
        bi, bi_changed = (model.hidden_states(x, mask, bidirectional=True) for x in (ids, changed))
        causal, causal_changed = (
            model.hidden_states(x, mask, bidirectional=False) for x in (ids, changed)
        )
    assert not torch.allclose(bi[0, 0], bi_changed[0, 0], atol=1e-4)
    torch.testing.assert_close(causal[0, 0], causal_changed[0, 0])


def test_embedding_of_the_first_token_depends_on_later_tokens(model):
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    changed = ids.clone()
    changed[0, -1] = 20
    mask = torch.ones_like(ids)
    first_only = torch.tensor([[1, 0, 0, 0, 0]])
    with torch.no_grad():
        a, b = (model.embed(x, mask, first_only) for x in (ids, changed))
    assert not torch.allclose(a, b, atol=1e-4)


# ----------------------------------------------------------------------------------- pooling


def test_pooled_vector_is_the_normalised_mean_over_text_positions_only(model, tok):
    batch = embedding_batch(tok, ["red cotton shirt from Acme"])
    with torch.no_grad():
        hidden = model.hidden_states(batch["input_ids"], batch["attention_mask"])[0]
        emb = model.embed(**batch)[0]
    text_positions = batch["pool_mask"][0].bool()
    assert 0 < text_positions.sum() < text_positions.numel()  # the instruction is there
    expected = F.normalize(hidden[text_positions].mean(0), dim=0)
    torch.testing.assert_close(emb, expected)
    with_instruction = F.normalize(hidden.mean(0), dim=0)
    assert not torch.allclose(emb, with_instruction, atol=1e-4)


def test_embeddings_have_unit_norm(model, tok):
    batch = embedding_batch(tok, ["hat", "a red cotton shirt", "blue running shoes for trail"])
    with torch.no_grad():
        emb = model.embed(**batch)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(3))


def test_left_or_right_padding_does_not_change_an_embedding(model, tok):
    texts = ["hat", "a red cotton shirt from Acme for 19.99 dollars"]
    with torch.no_grad():
        right = model.embed(**embedding_batch(tok, texts, side="right"))
        left = model.embed(**embedding_batch(tok, texts, side="left"))
        alone = model.embed(**embedding_batch(tok, texts[:1]))
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(right[:1], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_embeddings_are_the_same_under_eager_and_sdpa_and_equal_each_text_alone(
    tiny_model_dir, tok, side
):
    # Eager attention adds a 4-D mask to the scores: a boolean mask would let padding in there
    # (True/False -> +1/+0) while sdpa honours it, so the two would embed a padded batch apart.
    texts = ["hat", "a red cotton shirt from Acme for 19.99 dollars", "blue shoes"]
    batch = embedding_batch(tok, texts, side=side)
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    embeddings = {}
    for implementation in ("eager", "sdpa"):
        lm = AutoModelForCausalLM.from_pretrained(
            tiny_model_dir, attn_implementation=implementation
        )
        unified = RecFoundModel(lm).eval()
        with torch.no_grad():
            padded = unified.embed(**batch)
            alone = torch.cat([unified.embed(**embedding_batch(tok, [t])) for t in texts])
        torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
        embeddings[implementation] = padded
    torch.testing.assert_close(embeddings["eager"], embeddings["sdpa"], atol=1e-5, rtol=1e-5)


def test_bidirectional_mask_is_additive_zero_on_real_keys_and_dtype_min_on_padding():
    mask = bidirectional_mask(torch.tensor([[1, 1, 0]]), torch.bfloat16)
    assert mask.shape == (1, 1, 3, 3) and mask.dtype is torch.bfloat16
    lowest = torch.finfo(torch.bfloat16).min
    expected = torch.tensor([0.0, 0.0, lowest], dtype=torch.bfloat16).expand(3, 3)
    assert torch.equal(mask[0, 0], expected)  # padding queries too see the real keys


# ----------------------------------------------------------------------------- generative loss


def test_generative_loss_is_cross_entropy_on_response_tokens_only(model, tok):
    examples = [
        P.encode_generative(tok, "Rate the review", "great quality, fits well", "E", 128, 16),
        P.encode_generative(tok, "Is it answerable?", "The battery lasts long.", "yes", 128, 16),
    ]
    batch = P.collate_generative(examples, tok.pad_token_id)
    with torch.no_grad():
        loss = model.generative_loss(**batch)
        logits = model.lm(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    # Token t is predicted from position t-1; only response labels count.
    targets = batch["labels"][:, 1:]
    keep = targets != P.IGNORE_INDEX
    expected = F.cross_entropy(logits[:, :-1][keep], targets[keep])
    torch.testing.assert_close(loss, expected)
    n_response = sum(len(e.labels) - e.prompt_length for e in examples)
    assert int(keep.sum()) == n_response


# -------------------------------------------------------------------------- adapter routing


@pytest.fixture()
def routed_model(tiny_model_dir):
    from recfound.model.adapters import attach_adapter

    lm = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapter = attach_adapter(lm, ModelConfig(adapter="tmole"))
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in adapter.layers.values():
            layer.lora_b.normal_(std=0.5)  # B = 0 at init would make every task identical
    return RecFoundModel(lm, adapter).eval()


def test_a_routed_model_embeds_each_task_with_its_own_experts(routed_model, tok):
    batch = embedding_batch(tok, ["red cotton shirt", "red cotton shirt"])
    with torch.no_grad():
        same = routed_model.embed(**batch, task_ids=torch.tensor([0, 0]))
        mixed = routed_model.embed(**batch, task_ids=torch.tensor([0, 1]))
    torch.testing.assert_close(mixed[0], same[0])
    assert not torch.allclose(mixed[1], same[1], atol=1e-4)


def test_a_routed_model_refuses_a_forward_without_task_ids(routed_model, tok):
    batch = embedding_batch(tok, ["red cotton shirt"])
    with pytest.raises(ValueError, match="task_ids"):
        routed_model.embed(**batch)


# -------------------------------------------------------------------------------------- dtype


def test_auto_dtype_follows_native_bf16_on_cpu_and_an_explicit_dtype_is_kept(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "0")  # a CPU without AMX / AVX512-BF16
    assert resolve_dtype(ModelConfig(dtype="auto"), "cpu") is torch.float32
    assert resolve_mixed_precision(TrainConfig(mixed_precision="auto")) == "no" or (
        torch.cuda.is_available()
    )
    assert resolve_dtype(ModelConfig(dtype="bfloat16"), "cpu") is torch.bfloat16
    monkeypatch.setenv(CPU_BF16_ENV, "1")  # one with them
    assert resolve_dtype(ModelConfig(dtype="auto"), "cpu") is torch.bfloat16
    assert resolve_dtype(ModelConfig(dtype="float32"), "cpu") is torch.float32
    monkeypatch.delenv(CPU_BF16_ENV)  # the probe decides: a bool either way
    assert isinstance(native_bf16("cpu"), bool)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_dtype_is_bfloat16_on_a_cuda_device_that_supports_it():
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert resolve_dtype(ModelConfig(dtype="auto"), "cuda") is expected


# ------------------------------------------------------------------------------------ InfoNCE


def _unit(*xs: float) -> torch.Tensor:
    return F.normalize(torch.tensor(xs), dim=0)


def _reference_info_nce(queries, passages, group_size, temperature) -> float:
    """InfoNCE written out with Python floats: -mean_i log softmax_j(q_i·p_j/τ)[i·G]."""
    total = 0.0
    for i, q in enumerate(queries.tolist()):
        scores = [
            sum(a * b for a, b in zip(q, p, strict=True)) / temperature for p in passages.tolist()
        ]
        log_z = math.log(sum(math.exp(s) for s in scores))
        total += log_z - scores[i * group_size]
    return total / len(queries)


def test_info_nce_equals_the_hand_computed_value_on_two_queries():
    queries = torch.stack([_unit(1.0, 0.2), _unit(0.1, 1.0)])
    # [q0 pos, q0 hard neg, q1 pos, q1 hard neg]
    passages = torch.stack([_unit(0.9, 0.3), _unit(0.5, 0.5), _unit(0.2, 1.0), _unit(1.0, -0.4)])
    loss = info_nce(queries, passages, group_size=2, temperature=0.1)
    expected = _reference_info_nce(queries, passages, 2, 0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_decreases_when_a_positive_moves_closer_to_its_query():
    queries = torch.stack([_unit(1.0, 0.2), _unit(0.1, 1.0)])
    passages = torch.stack([_unit(0.5, 0.8), _unit(0.5, 0.5), _unit(0.2, 1.0), _unit(1.0, -0.4)])
    closer = passages.clone()
    closer[0] = _unit(1.0, 0.25)
    before = info_nce(queries, passages, group_size=2, temperature=0.1)
    after = info_nce(queries, closer, group_size=2, temperature=0.1)
    assert after < before


def test_info_nce_rejects_a_passage_count_that_does_not_match_the_groups():
    with pytest.raises(ValueError, match="group_size"):
        info_nce(torch.ones(2, 4), torch.ones(3, 4), group_size=2, temperature=0.1)


# One rank of a 2-process gloo group; run as its own interpreter so it imports only torch.
_RANK_SCRIPT = """
import sys, torch, torch.distributed as dist, torch.nn.functional as F
from recfound.model.losses import info_nce
rank, world, init_file, result_file = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method="file://" + init_file, rank=rank, world_size=world)
torch.manual_seed(0)
queries = F.normalize(torch.randn(world * 2, 8), dim=-1)
passages = F.normalize(torch.randn(world * 4, 8), dim=-1)
local_p = passages[rank * 4 : (rank + 1) * 4].clone().requires_grad_(True)
loss = info_nce(queries[rank * 2 : (rank + 1) * 2], local_p, group_size=2, temperature=0.05)
loss.backward()
torch.save({"loss": loss.detach(), "grad": local_p.grad}, result_file + str(rank))
dist.destroy_process_group()
"""


def test_info_nce_across_processes_is_the_whole_batch_loss_on_every_rank(tmp_path):
    world = 2
    init, result = str(tmp_path / "init"), str(tmp_path / "result")
    ranks = [
        subprocess.Popen([sys.executable, "-c", _RANK_SCRIPT, str(r), str(world), init, result])
        for r in range(world)
    ]
    assert [p.wait(timeout=120) for p in ranks] == [0] * world
    got = [torch.load(result + str(r), weights_only=True) for r in range(world)]

    torch.manual_seed(0)
    queries = F.normalize(torch.randn(world * 2, 8), dim=-1)
    passages = F.normalize(torch.randn(world * 4, 8), dim=-1).requires_grad_(True)
    whole = info_nce(queries, passages, group_size=2, temperature=0.05)
    # Queries and passages are both gathered: every rank computes the whole-batch loss.
    for g in got:
        torch.testing.assert_close(g["loss"], whole.detach())
    # A rank's own passages get N times their share of the whole-batch gradient (a detached
    # gather would give them none): data-parallel averaging over N ranks then yields exactly the
    # single-process gradient (tests/test_gradcache.py checks it through a model).
    expected = torch.autograd.grad(whole, passages)[0]
    for rank, g in enumerate(got):
        torch.testing.assert_close(g["grad"], world * expected[rank * 4 : (rank + 1) * 4])
