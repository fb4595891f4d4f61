"""S2Sched: the step-wise, convergence-oriented sample scheduler (recfound.md §3).

Two pools, the embedding tasks and the generative tasks of the task set (those with training
rows: all 13 on the full dataset, fewer when a user brings only some sources), each with a
fixed number of slots per step. A pool without tasks is simply absent: its slots go unused and
no validation loss is asked of it. S2Sched splits each pool's slots among its tasks:

* warm-up (and `enabled: false`): slots ∝ training-set sizes;
* afterwards, from the tasks' validation-loss curves (CoBa, Gong et al. 2024, turned from loss
  weights into sample counts):

  - ℓ̃_i = validation loss / first validation loss, one point every `update_interval` steps;
  - s_i = least-squares slope of the last `window` points of ℓ̃_i (negative = still improving);
  - RCS = softmax_i(K · s_i / Σ_j |s_j|): slow or rising tasks get more;
  - ACS = softmax_i(−M_i · s_i / Σ_m |s_i^(m)|) over the last M_i ≤ window slopes of task i:
    a task rising against its own past (over-fitting) gets less;
  - DF  = min(1, N · softmax(−τ_df · N · h / Σ_n |h_n|)_N), h the history (length N) of the
    group's slope, i.e. the slope of max_i ℓ̃_i: near 1 while the group converges (trust RCS),
    smaller once it diverges (lean on ACS);
  - w = softmax(K · (DF · RCS + (1 − DF) · ACS));  w ← w ⊙ size/mean(size), renormalised;
  - floor f = 1 / (floor_divisor · K): only if some w_i < f, the whole group is lifted,
    w ← w · (1 − K·f) + f (as the authors' code does), which keeps Σw = 1 and puts the smallest
    weight at or above f; a group with every weight at or above f is left as it is.

* Allocation: slots × w apportioned by largest remainder, capped by the samples still unseen in
  the current epoch, shortfall to the group's other tasks by weight (then, once a whole group is
  out of unseen samples, from fresh epochs).

Zero denominators (all slopes exactly zero, e.g. a plateau or a one-point history) carry no
signal: the normalised term is taken as 0, which makes RCS/ACS uniform and DF = 1. A zero first
validation loss leaves that task's losses unnormalised (divided by 1).

Largest remainder is applied to the *cumulative* quota: the fractional part a task did not get in
one step is carried into the next. With few slots (2 embedding slots over 3 tasks) a per-step
rounding would otherwise starve the same task forever; carried remainders make each task's
realised share converge to its weight.

All state is plain numbers and lists (`state_dict()` is JSON-able), so checkpoints restore the
scheduler exactly and every rank that feeds it the same losses takes the same decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recfound.config import S2SchedConfig
from recfound.tasks import TASKS, Kind

STATE_VERSION = 1
# Pool order: the slots of TrainConfig (embedding_per_batch, generative_per_batch) follow it.
POOL_KINDS: tuple[Kind, Kind] = (Kind.EMBEDDING, Kind.GENERATIVE)
# (embedding task ids, generative task ids), each in id order; either may be empty.
Groups = tuple[tuple[int, ...], tuple[int, ...]]


def task_groups(task_ids: Iterable[int]) -> Groups:
    """`task_ids` split into the two pools by kind (POOL_KINDS order), each in id order."""
    ids = sorted(set(task_ids))
    unknown = [t for t in ids if not 0 <= t < len(TASKS)]
    if unknown:
        raise ValueError(f"unknown task id(s) {unknown}; ids lie in 0..{len(TASKS) - 1}")
    embedding, generative = (tuple(t for t in ids if TASKS[t].kind is k) for k in POOL_KINDS)
    return embedding, generative


def softmax(x: np.ndarray) -> np.ndarray:
    """Numerically stable softmax of a 1-D array."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max()
    e = np.exp(z)
    return e / e.sum()


def least_squares_slope(values: Sequence[float]) -> float:
    """Slope of the least-squares line through (0, v_0), (1, v_1), ...; 0.0 for < 2 points."""
    y = np.asarray(values, dtype=np.float64)
    if y.size < 2:
        return 0.0
    x = np.arange(y.size, dtype=np.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def _safe_ratio(numerator: np.ndarray, denominator: float) -> np.ndarray:
    """numerator / denominator, or zeros when the denominator is 0 (no signal: see module doc)."""
    if denominator == 0.0:
        return np.zeros_like(numerator, dtype=np.float64)
    return numerator / denominator


def relative_convergence(slopes: Sequence[float]) -> np.ndarray:
    """RCS_i = softmax_i(K · s_i / Σ_j |s_j|): the slower a task converges, the larger."""
    s = np.asarray(slopes, dtype=np.float64)
    return softmax(s.size * _safe_ratio(s, float(np.abs(s).sum())))


def absolute_convergence(slope_histories: Sequence[Sequence[float]]) -> np.ndarray:
    """ACS_i = softmax_i(−M_i · s_i / Σ_m |s_i^(m)|), s_i the last entry of task i's history.

    Each task's current slope is measured against its own recent slopes, so a task whose loss
    turns upward relative to its past (over-fitting) gets less.
    """
    scores = []
    for history in slope_histories:
        h = np.asarray(history, dtype=np.float64)
        scores.append(-h.size * float(_safe_ratio(h[-1:], float(np.abs(h).sum()))[0]))
    return softmax(np.asarray(scores))


def divergence_factor(group_slopes: Sequence[float], temperature: float) -> float:
    """DF = min(1, N · softmax(−τ · N · h / Σ|h|)_last) over the group-slope history h (length N).

    Near 1 while the group's worst loss still falls; small once it turns upward.
    """
    h = np.asarray(group_slopes, dtype=np.float64)
    if h.size == 0:
        return 1.0
    scaled = -temperature * h.size * _safe_ratio(h, float(np.abs(h).sum()))
    return float(min(1.0, h.size * softmax(scaled)[-1]))


def proportional_weights(sizes: Sequence[int]) -> np.ndarray:
    """w_i = size_i / Σ size (uniform when every size is 0)."""
    n = np.asarray(sizes, dtype=np.float64)
    total = n.sum()
    return np.full(n.size, 1.0 / n.size) if total == 0 else n / total


def scheduled_weights(
    rcs: np.ndarray, acs: np.ndarray, df: float, sizes: Sequence[int], floor_divisor: int
) -> np.ndarray:
    """w = softmax(K·(DF·RCS + (1−DF)·ACS)), times size/mean(size), renormalised, floored."""
    k = rcs.size
    w = softmax(k * (df * rcs + (1.0 - df) * acs))
    n = np.asarray(sizes, dtype=np.float64)
    if n.sum() > 0:
        w = w * (n / n.mean())
        w = w / w.sum()
    return lift_to_floor(w, 1.0 / (floor_divisor * k))


def lift_to_floor(w: np.ndarray, floor: float) -> np.ndarray:
    """w unchanged when no weight is under `floor`; else w·(1 − K·floor) + floor for all K.

    The authors' rule: the affine lift keeps Σw = 1 and the order of the weights, and maps the
    smallest weight to at least `floor` (K·floor ≤ 1). It moves every weight of the group, but
    only when one of them needs it.
    """
    if not (w < floor).any():
        return w
    return w * (1.0 - w.size * floor) + floor


def apportion(
    slots: int,
    weights: np.ndarray,
    capacity: np.ndarray,
    carry: np.ndarray,
) -> np.ndarray:
    """Hand out `slots` by largest remainder of (carry + slots·w), respecting `capacity`.

    One slot at a time goes to the task with the largest outstanding quota that still has
    capacity (ties: lowest index); its quota drops by one. Without caps and carry this is exactly
    Hamilton's largest-remainder method; a capped task's slots go to the others in the order of
    their quotas, i.e. by weight. `carry` is updated in place with what stays outstanding.
    Returns the counts (their sum is min(slots, Σ capacity)).
    """
    counts = np.zeros(weights.size, dtype=np.int64)
    carry += slots * weights
    left = capacity.astype(np.int64).copy()
    for _ in range(slots):
        open_ = left > 0
        if not open_.any():
            break
        i = int(np.argmax(np.where(open_, carry, -np.inf)))
        counts[i] += 1
        left[i] -= 1
        carry[i] -= 1.0
    return counts


@dataclass(frozen=True)
class TaskGroup:
    """One pool of tasks sharing a fixed number of slots per step."""

    name: str
    task_ids: tuple[int, ...]
    slots: int


class S2Sched:
    """Per-step sample allocation over the embedding and generative task pools.

    The task set is the keys of `train_sizes`; a pool with none of them is left out (no slots
    handed out, no group history), so any non-empty task set works, one kind alone included.

    Usage per training step `t`:
        if sched.is_update_step(t): sched.update(t, validation_losses)   # {task_id: loss}
        counts = sched.allocate(t, unseen)   # {task_id: n}; unseen = samples left this epoch
    """

    def __init__(
        self,
        cfg: S2SchedConfig,
        train_sizes: Mapping[int, int],
        embedding_slots: int,
        generative_slots: int,
    ) -> None:
        if cfg.window < 2:
            raise ValueError(f"s2sched.window must be >= 2 to fit a slope, got {cfg.window}")
        if cfg.update_interval < 1:
            raise ValueError(f"s2sched.update_interval must be >= 1, got {cfg.update_interval}")
        if not train_sizes:
            raise ValueError("S2Sched needs at least one task")
        self.cfg = cfg
        slots = (embedding_slots, generative_slots)
        pools = zip(POOL_KINDS, task_groups(train_sizes), slots, strict=True)
        self.groups = tuple(TaskGroup(kind.value, ids, n) for kind, ids, n in pools if ids)
        self.sizes = {t: int(train_sizes.get(t, 0)) for g in self.groups for t in g.task_ids}
        task_ids = [t for g in self.groups for t in g.task_ids]
        # Mutable state; everything here goes into state_dict().
        self.first_loss: dict[int, float] = {}
        self.loss_history: dict[int, list[float]] = {t: [] for t in task_ids}
        self.slope_history: dict[int, list[float]] = {t: [] for t in task_ids}
        self.group_slope_history: dict[str, list[float]] = {g.name: [] for g in self.groups}
        self.update_steps: list[int] = []
        self.scheduled: dict[int, float] | None = None
        self.carry: dict[int, float] = {t: 0.0 for t in task_ids}

    # -- when and what ---------------------------------------------------------------------
    @property
    def task_ids(self) -> tuple[int, ...]:
        return tuple(t for g in self.groups for t in g.task_ids)

    def is_update_step(self, step: int) -> bool:
        """True when validation losses are due before training step `step` (0, k, 2k, ...)."""
        return self.cfg.enabled and step % self.cfg.update_interval == 0

    def proportional(self) -> dict[int, float]:
        """Data-proportional weights per group (warm-up, and the whole run when disabled)."""
        out: dict[int, float] = {}
        for g in self.groups:
            w = proportional_weights([self.sizes[t] for t in g.task_ids])
            out.update(zip(g.task_ids, w.tolist(), strict=True))
        return out

    def weights(self, step: int) -> dict[int, float]:
        """Each task's share of its group's slots at `step` (sums to 1 per group)."""
        if not self.cfg.enabled or step < self.cfg.warmup_steps or self.scheduled is None:
            return self.proportional()
        return dict(self.scheduled)

    # -- learning from validation losses ----------------------------------------------------
    def update(self, step: int, val_losses: Mapping[int, float]) -> None:
        """Record one validation point per task and recompute the scheduled weights.

        `val_losses` must hold every task of the task set with a finite loss (other entries
        are ignored).
        """
        missing = [t for t in self.task_ids if t not in val_losses]
        if missing:
            raise ValueError(f"S2Sched.update at step {step}: no validation loss for {missing}")
        for t in self.task_ids:
            loss = float(val_losses[t])
            if not np.isfinite(loss):
                raise ValueError(f"S2Sched.update at step {step}: task {t} loss is {loss}")
            first = self.first_loss.setdefault(t, loss)
            self.loss_history[t].append(loss / first if first != 0.0 else loss)
        self.update_steps.append(step)
        if len(self.update_steps) < 2:
            return  # one point has no slope yet
        window = self.cfg.window
        weights: dict[int, float] = {}
        for g in self.groups:
            for t in g.task_ids:
                self.slope_history[t].append(least_squares_slope(self.loss_history[t][-window:]))
            worst = np.max([self.loss_history[t] for t in g.task_ids], axis=0)
            self.group_slope_history[g.name].append(least_squares_slope(worst[-window:]))
            slopes = [self.slope_history[t][-1] for t in g.task_ids]
            rcs = relative_convergence(slopes)
            acs = absolute_convergence([self.slope_history[t][-window:] for t in g.task_ids])
            df = divergence_factor(self.group_slope_history[g.name], self.cfg.df_temperature)
            w = scheduled_weights(
                rcs, acs, df, [self.sizes[t] for t in g.task_ids], self.cfg.floor_divisor
            )
            weights.update(zip(g.task_ids, w.tolist(), strict=True))
        self.scheduled = weights

    # -- allocation -------------------------------------------------------------------------
    def allocate(self, step: int, unseen: Mapping[int, int]) -> dict[int, int]:
        """Samples per task for step `step`.

        `unseen[t]` = samples of task t not yet drawn in its current epoch. Slots go first to
        unseen samples; only when a whole group has run out are samples of fresh epochs used
        (at most the task's size per step). Sums to each group's slots unless the group's
        training sets together are smaller.
        """
        weights = self.weights(step)
        counts: dict[int, int] = {}
        for g in self.groups:
            ids = g.task_ids
            w = np.array([weights[t] for t in ids])
            carry = np.array([self.carry[t] for t in ids])
            unseen_cap = np.array([min(int(unseen.get(t, 0)), self.sizes[t]) for t in ids])
            n = apportion(g.slots, w, unseen_cap, carry)
            short = g.slots - int(n.sum())
            if short:
                # The carry already holds this step's quota; only the leftover slots move.
                fresh_cap = np.array([self.sizes[t] for t in ids]) - n
                n += apportion(short, np.zeros_like(w), fresh_cap, carry)
            # A task that cannot be served (empty training set) must not hoard quota.
            np.clip(carry, -float(g.slots), float(g.slots), out=carry)
            counts.update(zip(ids, n.tolist(), strict=True))
            self.carry.update(zip(ids, carry.tolist(), strict=True))
        return counts

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All mutable state as JSON-able values (task ids become string keys)."""

        def keyed(d: Mapping[int, Any]) -> dict[str, Any]:
            return {str(k): v for k, v in d.items()}

        return {
            "version": STATE_VERSION,
            "first_loss": keyed(self.first_loss),
            "loss_history": keyed(self.loss_history),
            "slope_history": keyed(self.slope_history),
            "group_slope_history": dict(self.group_slope_history),
            "update_steps": list(self.update_steps),
            "scheduled": None if self.scheduled is None else keyed(self.scheduled),
            "carry": keyed(self.carry),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict()` produced (after a JSON round trip, too)."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"S2Sched state version {state.get('version')!r} != {STATE_VERSION}")

        def unkeyed(d: Mapping[str, Any]) -> dict[int, Any]:
            return {int(k): v for k, v in d.items()}

        self.first_loss = {k: float(v) for k, v in unkeyed(state["first_loss"]).items()}
        self.loss_history = {
            k: [float(x) for x in v] for k, v in unkeyed(state["loss_history"]).items()
        }
        self.slope_history = {
            k: [float(x) for x in v] for k, v in unkeyed(state["slope_history"]).items()
        }
        self.group_slope_history = {
            k: [float(x) for x in v] for k, v in state["group_slope_history"].items()
        }
        self.update_steps = [int(s) for s in state["update_steps"]]
        scheduled = state["scheduled"]
        self.scheduled = (
            None if scheduled is None else {k: float(v) for k, v in unkeyed(scheduled).items()}
        )
        self.carry = {k: float(v) for k, v in unkeyed(state["carry"]).items()}
