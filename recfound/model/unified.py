"""One causal LM that both generates and embeds (GritLM style), routed per task by an adapter.

- Generation: the usual causal forward; loss = next-token cross-entropy on response tokens.
- Embedding: the same network with *bidirectional* attention, obtained without patching
  transformers by passing a ready 4-D mask (batch, 1, L, L), which transformers hands to the
  attention function as it is (a 2-D mask would keep the model causal). The mask is additive:
  M[b, 0, q, k] = 0 where key k of sample b is a real token and finfo(dtype).min where it is
  padding, so softmax(QKᵀ·s + M) gives padding keys weight 0 under every attention
  implementation. (A boolean mask would be right under sdpa only: eager attention adds the mask
  to the scores, and True/False become +1/+0, so every query would attend padding.) The last
  hidden states of the decoder (not the LM head) are mean-pooled over the text tokens and
  L2-normalised.

The adapter (TMoLE or LoRA, recfound.model.adapters) is optional; when present, every forward
runs inside `adapter.route(task_ids)` so each sample gets its task's experts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from recfound.config import ModelConfig
from recfound.model.losses import per_sample_lm_loss, response_positions, response_token_counts

# `model.dtype` names -> torch dtypes (recfound.train.plan sizes its plan with them too)
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


# "0" / "1" overrides the CPU probe of `native_bf16` (e.g. to compare fp32 with bf16)
CPU_BF16_ENV = "RECFOUND_CPU_BF16"


def native_bf16(device: torch.device | str) -> bool:
    """Whether `device` multiplies bfloat16 in hardware: a CUDA GPU that supports it, or a CPU
    with AMX or AVX512-BF16 (there bf16 training steps measured ~1.5x faster than fp32; on
    other CPUs bf16 is emulated and slower)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    if (forced := os.environ.get(CPU_BF16_ENV)) in ("0", "1"):
        return forced == "1"  # the test suite pins fp32, so results match on any CPU
    # torch.cpu's capability probes are private: absent ones count as "no"
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_dtype(model_cfg: ModelConfig, device: torch.device | str) -> torch.dtype:
    """The compute dtype for `model.dtype` on `device`.

    `auto` is bfloat16 where the device multiplies it natively (`native_bf16`: greedy generation
    ran 2x faster in bf16 than in fp32 on a 2-core AMX CPU) and float32 otherwise (emulated bf16
    is slow; fp16 without loss scaling is unsafe for training).
    """
    if model_cfg.dtype != "auto":
        return DTYPES[model_cfg.dtype]
    return torch.bfloat16 if native_bf16(device) else torch.float32


def bidirectional_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, L) 0/1 padding mask -> (batch, 1, L, L) additive mask: every query sees every real
    key. Entries are 0 on real keys and finfo(dtype).min on padding keys.

    Additive, not boolean, so eager attention (scores + mask) and sdpa (which adds a float mask)
    agree; transformers builds its own eager masks the same way. `dtype` should be the model's
    activation dtype (its input embeddings'): sdpa accepts a float mask that is float32 or the
    query's dtype. Padding queries also see the real keys, so no row is fully masked (no NaN
    from softmax).
    """
    batch, length = attention_mask.shape
    padding_keys = ~attention_mask.bool()[:, None, None, :]
    mask = torch.zeros(batch, 1, 1, length, dtype=dtype, device=attention_mask.device)
    mask = mask.masked_fill(padding_keys, torch.finfo(dtype).min)
    return mask.expand(batch, 1, length, length)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def mean_pool(hidden: torch.Tensor, pool_mask: torch.Tensor) -> torch.Tensor:
    """Mean of `hidden` (batch, L, d) over the positions where `pool_mask` (batch, L) is 1."""
    weights = pool_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class RecFoundModel(nn.Module):
    """A causal LM plus an optional task-routed adapter: `embed`, `generative_loss`, `generate`.

    `lm` is a transformers `*ForCausalLM` (possibly with the adapter's layers injected);
    `adapter` exposes `route(task_ids)`, a context manager selecting each sample's task.
    """

    def __init__(self, lm: nn.Module, adapter: Any | None = None) -> None:
        super().__init__()
        self.lm = lm
        # nn.Module registers an adapter that is a module (its task table then moves with us).
        self.adapter = adapter

    def enable_gradient_checkpointing(self) -> None:
        """Keep only each decoder layer's input in the forward and recompute the layer in the
        backward (transformers' activation checkpointing, non-reentrant torch checkpoint).

        The recompute runs in the backward, outside the `routed` block of its forward, so the
        adapter's `checkpoint_contexts` re-enter that forward's routing around it; torch
        restores the RNG state, so adapter dropout draws the masks it drew (GradCache's replay
        relies on the same). Only in training mode, as transformers checkpoints.
        """
        kwargs = {"use_reentrant": False}
        if self.adapter is not None:
            kwargs["context_fn"] = self.adapter.checkpoint_contexts
        enable = getattr(self.lm, "activation_checkpointing_enable", None)
        if enable is not None:  # newer transformers; there gradient_checkpointing_enable warns
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    @contextmanager
    def routed(self, task_ids: torch.Tensor | None) -> Iterator[None]:
        """Route the adapter to `task_ids` (one per sample) for the duration of the block."""
        if self.adapter is None:
            yield
            return
        if task_ids is None:
            raise ValueError("this model has a task-routed adapter: task_ids are required")
        with self.adapter.route(task_ids):
            yield

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        task_ids: torch.Tensor | None = None,
        bidirectional: bool = True,
    ) -> torch.Tensor:
        """Last-layer hidden states (batch, L, d) of the decoder, bidirectional or causal."""
        decoder = self.lm.get_decoder()
        activation_dtype = decoder.get_input_embeddings().weight.dtype
        mask = (
            bidirectional_mask(attention_mask, activation_dtype)
            if bidirectional
            else attention_mask
        )
        with self.routed(task_ids):
            out = decoder(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids_from_mask(attention_mask),
                use_cache=False,
            )
        return out.last_hidden_state

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pool_mask: torch.Tensor,
        task_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unit-norm embeddings (batch, d): e = h̄ / ‖h̄‖, h̄ = mean hidden state over pool_mask."""
        hidden = self.hidden_states(input_ids, attention_mask, task_ids, bidirectional=True)
        return F.normalize(mean_pool(hidden, pool_mask), dim=-1)

    def generative_loss(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        task_ids: torch.Tensor | None = None,
        per_sample: bool = False,
    ) -> torch.Tensor:
        """Causal next-token cross-entropy over the tokens whose label is not -100: their mean,
        or with `per_sample` each sample's own mean, shape (B,) (losses.per_sample_lm_loss).

        Logits are computed at the response positions only (`logits_to_keep`): the LM head
        (vocabulary × hidden) over every prompt token would be most of its cost for nothing.
        """
        with self.routed(task_ids):
            out = self.lm(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids_from_mask(attention_mask),
                logits_to_keep=response_positions(labels),
                use_cache=False,
            )
        losses = per_sample_lm_loss(out.logits, labels)
        if per_sample:
            return losses
        tokens = response_token_counts(labels)
        return (losses * tokens).sum() / tokens.sum().clamp(min=1)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        task_ids: torch.Tensor | None = None,
        max_new_tokens: int = 32,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """Continue left-padded prompts (greedy unless `generate_kwargs` say otherwise).

        Returns only the new tokens (batch, T).
        """
        options = {"do_sample": False, "num_beams": 1, **generate_kwargs}
        with self.routed(task_ids):
            out = self.lm.generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                max_new_tokens=max_new_tokens,
                **options,
            )
        return out[:, input_ids.shape[1] :]
