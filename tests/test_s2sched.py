"""S2Sched (recfound.md §3) on hand-made validation-loss histories."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recfound.config import S2SchedConfig
from recfound.tasks import EMBEDDING_TASK_IDS, GENERATIVE_TASK_IDS, NUM_TASKS
from recfound.train.s2sched import (
    S2Sched,
    absolute_convergence,
    apportion,
    divergence_factor,
    least_squares_slope,
    lift_to_floor,
    relative_convergence,
    scheduled_weights,
)

U2I, Q2I, I2I = EMBEDDING_TASK_IDS
EQUAL_SIZES = {t: 100 for t in range(NUM_TASKS)}
PLENTY = {t: 10_000 for t in range(NUM_TASKS)}


def scheduler(
    sizes: dict[int, int] = EQUAL_SIZES, emb_slots: int = 6, gen_slots: int = 20, **cfg
) -> S2Sched:
    base = {"warmup_steps": 0, "update_interval": 1, "window": 3}
    return S2Sched(S2SchedConfig(**{**base, **cfg}), sizes, emb_slots, gen_slots)


def feed(sched: S2Sched, curves: dict[int, list[float]]) -> None:
    """One update per point; tasks without a curve keep a flat loss of 1."""
    length = len(next(iter(curves.values())))
    for step in range(length):
        losses = {t: 1.0 for t in range(NUM_TASKS)}
        losses.update({t: curve[step] for t, curve in curves.items()})
        sched.update(step, losses)


def total_allocation(sched: S2Sched, start: int, steps: int) -> dict[int, int]:
    totals = dict.fromkeys(range(NUM_TASKS), 0)
    for step in range(start, start + steps):
        for t, n in sched.allocate(step, PLENTY).items():
            totals[t] += n
    return totals


def test_least_squares_slope_matches_polyfit():
    values = [3.0, 2.5, 2.7, 1.9, 1.2]
    assert least_squares_slope(values) == pytest.approx(np.polyfit(range(5), values, 1)[0])
    assert least_squares_slope([4.2]) == 0.0


def test_plateaued_task_gets_more_samples_than_one_still_falling_fast():
    sched = scheduler()
    feed(
        sched, {U2I: [1.0, 0.99, 0.985, 0.98], Q2I: [1.0, 0.7, 0.4, 0.1], I2I: [1.0, 0.9, 0.8, 0.7]}
    )
    w = sched.weights(step=4)
    assert w[U2I] > w[I2I] > w[Q2I]
    counts = total_allocation(sched, start=4, steps=30)
    assert counts[U2I] > counts[Q2I]


def test_task_whose_loss_turns_upward_is_damped():
    falling = [1.0, 0.8, 0.6, 0.45, 0.35, 0.28, 0.22]
    rising = [1.0, 0.8, 0.6, 0.5, 0.6, 0.8, 0.9]  # over-fits from the 4th point on
    sched = scheduler()
    feed(sched, {U2I: falling, Q2I: rising, I2I: falling})
    group_slopes = sched.group_slope_history["embedding"]
    assert divergence_factor(group_slopes, 1.0) < 0.5  # the group diverges: ACS takes over
    w = sched.weights(step=7)
    assert w[Q2I] < w[U2I]
    counts = total_allocation(sched, start=7, steps=30)
    assert counts[Q2I] < counts[U2I]


def test_relative_score_alone_would_favour_the_rising_task():
    # The damping above comes from ACS/DF, not from RCS, which ranks rising tasks first.
    rcs = relative_convergence([-0.1, 0.15, -0.1])
    assert rcs[1] == rcs.max()
    acs = absolute_convergence([[-0.2, -0.15, -0.1], [-0.2, 0.0, 0.15], [-0.2, -0.15, -0.1]])
    assert acs[1] == acs.min()


@pytest.mark.parametrize("seed", range(5))
def test_weights_sum_to_one_per_group_and_respect_the_floor(seed):
    rng = np.random.default_rng(seed)
    sizes = {t: int(rng.integers(1, 500)) for t in range(NUM_TASKS)}
    sched = scheduler(sizes, floor_divisor=5)
    curves = {t: list(np.cumsum(rng.normal(0, 0.2, size=6)) + 3.0) for t in range(NUM_TASKS)}
    feed(sched, curves)
    w = sched.weights(step=6)
    for ids in (EMBEDDING_TASK_IDS, GENERATIVE_TASK_IDS):
        assert sum(w[t] for t in ids) == pytest.approx(1.0)
        assert min(w[t] for t in ids) >= 1.0 / (5 * len(ids)) - 1e-12


def test_floor_lifts_a_task_with_a_tiny_training_set():
    sizes = {**EQUAL_SIZES, I2I: 1}
    sched = scheduler(sizes, floor_divisor=5)
    feed(sched, {U2I: [1.0, 0.9, 0.8], Q2I: [1.0, 0.9, 0.8], I2I: [1.0, 0.9, 0.8]})
    assert sched.weights(step=3)[I2I] >= 1.0 / 15 - 1e-12


def test_weights_above_the_floor_are_left_as_they_are():
    w = np.array([0.5, 0.3, 0.2])
    assert lift_to_floor(w, 1 / 15) is w
    w = scheduled_weights(np.full(3, 1 / 3), np.full(3, 1 / 3), 1.0, [50, 30, 20], 5)
    np.testing.assert_allclose(w, [0.5, 0.3, 0.2])


def test_a_weight_under_the_floor_lifts_the_whole_group_affinely():
    floor = 1 / 15
    w = np.array([0.9, 0.08, 0.02])
    lifted = lift_to_floor(w, floor)
    assert lifted.sum() == pytest.approx(1.0)
    assert lifted.min() >= floor
    # the authors' lift: every weight of the group moves by the same affine map
    np.testing.assert_allclose(lifted, w * (1 - 3 * floor) + floor)
    assert lifted[0] < w[0] and lifted[2] > w[2]  # the largest pays for the lift


def test_all_zero_slopes_give_finite_size_proportional_weights():
    sizes = {**EQUAL_SIZES, U2I: 300, Q2I: 100, I2I: 100}
    sched = scheduler(sizes)
    feed(sched, {t: [2.0, 2.0, 2.0] for t in range(NUM_TASKS)})
    w = sched.weights(step=3)
    assert all(np.isfinite(v) for v in w.values())
    # uniform RCS/ACS, DF = 1 -> only the size factor remains: 0.6 / 0.2 / 0.2. No weight is
    # under the floor 1/15, so (as in the authors' code) the floor leaves them as they are.
    assert [w[U2I], w[Q2I], w[I2I]] == pytest.approx([0.6, 0.2, 0.2])


def test_allocation_sums_to_the_slots_and_respects_availability():
    sched = scheduler(emb_slots=6, gen_slots=20)
    feed(sched, {U2I: [1.0, 0.99, 0.98], Q2I: [1.0, 0.5, 0.2], I2I: [1.0, 0.9, 0.8]})
    unseen = {**PLENTY, U2I: 1, Q2I: 0, 3: 2}
    for step in range(3, 13):
        counts = sched.allocate(step, unseen)
        assert sum(counts[t] for t in EMBEDDING_TASK_IDS) == 6
        assert sum(counts[t] for t in GENERATIVE_TASK_IDS) == 20
        assert counts[U2I] <= 1 and counts[Q2I] == 0 and counts[3] <= 2


def test_shortfall_is_served_from_fresh_epochs_when_a_group_runs_out():
    sched = scheduler(emb_slots=6)
    counts = sched.allocate(0, {**PLENTY, U2I: 1, Q2I: 1, I2I: 1})
    assert sum(counts[t] for t in EMBEDDING_TASK_IDS) == 6
    assert all(counts[t] >= 1 for t in EMBEDDING_TASK_IDS)  # the unseen ones are taken first


def test_a_group_smaller_than_its_slots_gets_what_exists():
    sizes = {**EQUAL_SIZES, U2I: 1, Q2I: 2, I2I: 0}
    sched = scheduler(sizes, emb_slots=6)
    counts = sched.allocate(0, PLENTY)
    assert (counts[U2I], counts[Q2I], counts[I2I]) == (1, 2, 0)


def test_disabled_scheduler_gives_data_proportional_counts():
    sizes = {**EQUAL_SIZES, U2I: 60, Q2I: 30, I2I: 10}
    sched = S2Sched(S2SchedConfig(enabled=False), sizes, 10, 20)
    assert not any(sched.is_update_step(step) for step in range(50))
    for step in range(5):
        counts = sched.allocate(step, PLENTY)
        assert (counts[U2I], counts[Q2I], counts[I2I]) == (6, 3, 1)
        assert all(counts[t] == 2 for t in GENERATIVE_TASK_IDS)


def test_warmup_is_data_proportional_even_with_a_loss_history():
    sizes = {**EQUAL_SIZES, U2I: 200, Q2I: 100, I2I: 100}
    sched = scheduler(sizes, warmup_steps=10)
    feed(sched, {U2I: [1.0, 0.5, 0.1], Q2I: [1.0, 1.0, 1.0], I2I: [1.0, 0.9, 0.8]})
    assert sched.weights(step=9)[U2I] == pytest.approx(0.5)
    assert sched.weights(step=10) != sched.weights(step=9)


def test_few_slots_still_serve_every_task_over_time():
    # 2 slots over 3 equal tasks: per-step rounding alone would never pick the third task.
    sched = scheduler(emb_slots=2)
    counts = total_allocation(sched, start=0, steps=30)
    assert (counts[U2I], counts[Q2I], counts[I2I]) == (20, 20, 20)


def test_apportion_is_largest_remainder():
    w = np.array([0.52, 0.35, 0.13])
    counts = apportion(10, w, np.full(3, 100), np.zeros(3))
    assert counts.tolist() == [5, 4, 1]  # quotas 5.2, 3.5, 1.3


def test_state_round_trips_through_json_and_continues_identically():
    sched = scheduler(emb_slots=2, gen_slots=5)
    feed(sched, {U2I: [1.0, 0.9, 0.85, 0.84], Q2I: [1.0, 0.6, 0.4, 0.3], I2I: [1.0, 1.0, 0.9, 1.1]})
    for step in range(4, 9):
        sched.allocate(step, PLENTY)
    restored = scheduler(emb_slots=2, gen_slots=5)
    restored.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    assert restored.state_dict() == sched.state_dict()
    for step in range(9, 20):
        assert restored.allocate(step, PLENTY) == sched.allocate(step, PLENTY)


def test_update_without_every_task_is_refused():
    sched = scheduler()
    with pytest.raises(ValueError, match="no validation loss"):
        sched.update(0, {U2I: 1.0})


# --- task subsets: the groups hold the tasks of train_sizes, an empty pool gets no slots

QR, SR, PM = 3, 4, 8


@pytest.mark.parametrize(
    ("sizes", "groups"),
    [
        ({SR: 50, PM: 30}, {"generative": (SR, PM)}),
        ({U2I: 40, I2I: 10}, {"embedding": (U2I, I2I)}),
        ({U2I: 40, SR: 50, PM: 30}, {"embedding": (U2I,), "generative": (SR, PM)}),
    ],
    ids=["generative-only", "embedding-only", "mixed"],
)
def test_groups_hold_only_the_tasks_of_the_task_set(sizes, groups):
    sched = scheduler(sizes, emb_slots=2, gen_slots=4, warmup_steps=2)
    assert {g.name: g.task_ids for g in sched.groups} == groups
    assert set(sched.task_ids) == set(sizes)
    for step in range(6):
        sched.update(step, {t: 1.0 / (step + 1 + t) for t in sizes})  # only the present tasks
        counts = sched.allocate(step, PLENTY)
        assert set(counts) == set(sizes)
        assert sum(counts.values()) == 2 * ("embedding" in groups) + 4 * ("generative" in groups)
        weights = sched.weights(step)
        for ids in groups.values():
            assert sum(weights[t] for t in ids) == pytest.approx(1.0)
    assert set(sched.state_dict()["loss_history"]) == {str(t) for t in sizes}


def test_a_single_task_takes_all_of_its_pools_slots():
    sched = scheduler({PM: 7}, emb_slots=3, gen_slots=5)
    feed(sched, {PM: [1.0, 0.8, 0.7]})
    assert sched.weights(3) == {PM: pytest.approx(1.0)}
    assert sched.allocate(3, {PM: 7}) == {PM: 5}


def test_a_subset_schedule_round_trips_through_json():
    sizes = {U2I: 30, SR: 20, PM: 10}
    sched = scheduler(sizes, emb_slots=2, gen_slots=3)
    feed(sched, {U2I: [1.0, 0.9, 0.8], SR: [1.0, 0.7, 0.6], PM: [1.0, 1.0, 0.95]})
    restored = scheduler(sizes, emb_slots=2, gen_slots=3)
    restored.load_state_dict(json.loads(json.dumps(sched.state_dict())))
    for step in range(3, 12):
        assert restored.allocate(step, PLENTY) == sched.allocate(step, PLENTY)


def test_an_empty_task_set_is_refused():
    with pytest.raises(ValueError, match="at least one task"):
        scheduler({})
