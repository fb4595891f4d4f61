"""How long a training run has left: its steps and S2Sched's validation passes, timed apart.

tqdm estimates the time left from one rate, steps per second. S2Sched's validation pass before
every `s2sched.update_interval`-th step falls inside that step as tqdm sees it, so the steps
after a pass look long and the estimate jumps (a user's first estimate, taken right after the
pass before step 0, read five hours). Here the two are timed apart:

    time left = steps left × typical step + validation passes left × typical pass

"Typical" is the median of the last `RECENT` durations of that kind: one slow step (the first,
warming up; one that saved a checkpoint) does not move it, a lasting change of pace does.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterable
from statistics import median

# Durations kept per kind: the median follows a change of pace within this many steps and
# ignores fewer than half as many outliers.
RECENT = 25


class RemainingTime:
    """The time left of a run of `total_steps` steps with a validation pass before each step
    of `validation_steps`; the loop reports each step's and each pass's duration."""

    def __init__(self, total_steps: int, validation_steps: Iterable[int]) -> None:
        self.total_steps = total_steps
        self.validation_steps = sorted(validation_steps)
        self._step_s: deque[float] = deque(maxlen=RECENT)
        self._pass_s: deque[float] = deque(maxlen=RECENT)

    def add_step(self, seconds: float) -> None:
        """A training step took `seconds` (its validation pass, if any, not included)."""
        self._step_s.append(seconds)

    def add_validation(self, seconds: float) -> None:
        """A validation pass took `seconds`."""
        self._pass_s.append(seconds)

    def seconds(self, next_step: int) -> float | None:
        """Seconds left when step `next_step` is the next to run (its pass not yet run);
        None until each kind of work still ahead has been timed once."""
        steps_left = max(self.total_steps - next_step, 0)
        passes_left = len(self.validation_steps) - bisect_left(self.validation_steps, next_step)
        if (steps_left and not self._step_s) or (passes_left and not self._pass_s):
            return None
        return steps_left * _typical(self._step_s) + passes_left * _typical(self._pass_s)


def _typical(durations: deque[float]) -> float:
    return median(durations) if durations else 0.0
