"""Merging checkpoints of one training run into one adapter (recfound.md §4), on plain state dicts.

Every method works on *task vectors* τ_k = θ_k − θ_0 (checkpoint k minus the initial adapter),
tensor by tensor, and returns θ_0 + merge(τ_1 … τ_n). All floating-point adapter tensors take
part: experts, routers and the task-embedding table alike (non-float ones, such as a mask, must
agree across checkpoints and are copied). The building blocks are PEFT's
(`peft.utils.merge_utils`): `prune` (magnitude or random), `calculate_majority_sign_mask`,
`disjoint_merge`, `task_arithmetic`.

- ties (Yadav et al. 2023): keep the `density` fraction of each τ_k with the largest |entries|,
  elect a sign per entry from Σ_k τ_k (the summed trimmed vectors), average only the entries
  whose sign agrees with it.
- dare_ties / dare_linear (Yu et al. 2024): drop entries at random with probability 1 − density
  and rescale the rest by 1/density; then TIES's sign election + disjoint mean, or the mean.
- linear: the mean of the task vectors (= the mean of the checkpoints).
- slerp: spherical interpolation between exactly two task vectors at `slerp_t`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from peft.utils.merge_utils import (
    calculate_majority_sign_mask,
    disjoint_merge,
    prune,
    task_arithmetic,
)

StateDict = dict[str, torch.Tensor]
MergeMethod = Literal["ties", "dare_ties", "dare_linear", "linear", "slerp"]
METHODS: tuple[str, ...] = ("ties", "dare_ties", "dare_linear", "linear", "slerp")

# Below this angle distance (1 − |cos θ|) SLERP's sin θ denominator is numerically unsafe and the
# two directions are parallel anyway, so linear interpolation is used (as mergekit does).
_PARALLEL_TOLERANCE = 1e-6


def check_compatible(initial: StateDict, checkpoints: Sequence[StateDict]) -> None:
    """Every checkpoint must hold exactly the initial adapter's tensor names and shapes."""
    if not checkpoints:
        raise ValueError("nothing to merge: no checkpoints given")
    for index, state in enumerate(checkpoints):
        missing = sorted(set(initial) - set(state))
        extra = sorted(set(state) - set(initial))
        if missing or extra:
            raise ValueError(
                f"checkpoint #{index} does not match the initial adapter: "
                f"missing {missing[:3]}{'…' if len(missing) > 3 else ''}, "
                f"unexpected {extra[:3]}{'…' if len(extra) > 3 else ''}"
            )
        for name, tensor in state.items():
            if tensor.shape != initial[name].shape:
                raise ValueError(
                    f"checkpoint #{index}: {name} has shape {tuple(tensor.shape)}, "
                    f"the initial adapter {tuple(initial[name].shape)}"
                )


def _sparsify(
    vectors: list[torch.Tensor], density: float, how: Literal["magnitude", "random"]
) -> list[torch.Tensor]:
    # PEFT's prune warns and passes the tensor through at density ≥ 1; skip the call (and the
    # warning per tensor) when nothing is to be dropped.
    if density >= 1.0:
        return vectors
    return [prune(v, density, method=how, rescale=how == "random") for v in vectors]


def _sign_consensus_mean(vectors: list[torch.Tensor]) -> torch.Tensor:
    stacked = torch.stack(vectors, dim=0)
    agree = calculate_majority_sign_mask(stacked, method="total")
    return disjoint_merge(stacked, agree)


def _mean(vectors: list[torch.Tensor]) -> torch.Tensor:
    weights = torch.full((len(vectors),), 1.0 / len(vectors), dtype=vectors[0].dtype)
    return task_arithmetic(vectors, weights.to(vectors[0].device))


def slerp(v0: torch.Tensor, v1: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation of two tensors seen as flat vectors.

    With cos θ = ⟨v0, v1⟩ / (‖v0‖ ‖v1‖): sin((1−t)θ)/sin θ · v0 + sin(tθ)/sin θ · v1; linear
    interpolation (1−t)·v0 + t·v1 when either is zero or they are (anti)parallel.
    """
    a, b = v0.flatten(), v1.flatten()
    norms = a.norm() * b.norm()
    if norms == 0:
        return torch.lerp(v0, v1, t)
    cos = torch.clamp(torch.dot(a, b) / norms, -1.0, 1.0)
    if 1.0 - cos.abs() < _PARALLEL_TOLERANCE:
        return torch.lerp(v0, v1, t)
    theta = torch.arccos(cos)
    return (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / torch.sin(theta)


def _fixed_tensor(
    name: str, initial: torch.Tensor, checkpoints: Sequence[StateDict]
) -> torch.Tensor:
    # Integer/bool tensors (e.g. a task-kind mask) are structure, not learned weights: they must
    # be identical in every checkpoint, and are copied.
    for index, state in enumerate(checkpoints):
        if not torch.equal(state[name], initial):
            raise ValueError(
                f"checkpoint #{index}: non-float tensor {name} differs from the initial"
            )
    return initial.clone()


def merge_tensor(
    vectors: list[torch.Tensor], method: MergeMethod, density: float, slerp_t: float
) -> torch.Tensor:
    """Merge the task vectors of one tensor (all the same shape) by `method`."""
    if method == "ties":
        return _sign_consensus_mean(_sparsify(vectors, density, "magnitude"))
    if method == "dare_ties":
        return _sign_consensus_mean(_sparsify(vectors, density, "random"))
    if method == "dare_linear":
        return _mean(_sparsify(vectors, density, "random"))
    if method == "linear":
        return _mean(vectors)
    if method == "slerp":
        if len(vectors) != 2:
            raise ValueError(f"slerp merges exactly two checkpoints, got {len(vectors)}")
        return slerp(vectors[0], vectors[1], slerp_t)
    raise ValueError(f"unknown merge method {method!r}; expected one of {', '.join(METHODS)}")


def merge_state_dicts(
    initial: StateDict,
    checkpoints: Sequence[StateDict],
    method: MergeMethod,
    density: float,
    slerp_t: float = 0.5,
    seed: int = 0,
) -> StateDict:
    """θ_0 + merge(θ_1 − θ_0, …, θ_n − θ_0), tensor by tensor (module docstring for methods).

    `density` ∈ (0, 1] is the kept fraction for ties/dare; `seed` fixes DARE's random drops
    (without touching the global RNG). Arithmetic runs in at least float32 — summing many
    bfloat16 vectors loses the small entries merging is about — and each result takes its
    tensor's original dtype.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if not 0.0 <= slerp_t <= 1.0:
        raise ValueError(f"slerp_t must be in [0, 1], got {slerp_t}")
    check_compatible(initial, checkpoints)
    merged: StateDict = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in sorted(initial):
            base = initial[name]
            if not base.is_floating_point():
                merged[name] = _fixed_tensor(name, base, checkpoints)
                continue
            compute = torch.promote_types(base.dtype, torch.float32)
            vectors = [state[name].to(compute) - base.to(compute) for state in checkpoints]
            delta = merge_tensor(vectors, method, density, slerp_t)
            merged[name] = (base.to(compute) + delta).to(base.dtype)
    return merged
