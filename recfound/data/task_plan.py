"""Which tasks a build makes: those the raw sources present can feed, narrowed by build.tasks.

`TASK_SOURCES` says which raw sources each task can be built from; `plan_tasks` turns the
sources present in data/ into the task set and, for every other task, the reason it is left
out. It fails before anything is read when no task can be built, or when build.tasks asks for
one whose source is absent (naming that source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from recfound.errors import RecFoundError
from recfound.tasks import TASKS

AMAZON_REVIEWS = ("amazon_reviews", "amazon_reviews_2018")
# The raw sources each task can be built from.
TASK_SOURCES: dict[str, tuple[str, ...]] = {
    "U2I": (*AMAZON_REVIEWS, "movielens"),
    "Q2I": ("esci",),
    "I2I": AMAZON_REVIEWS,
    "QR": ("esci",),
    "SR": (*AMAZON_REVIEWS, "movielens"),
    "PRP": ("esci",),
    "SA": AMAZON_REVIEWS,
    "AVE": AMAZON_REVIEWS,
    "PM": ("amazon_google",),
    "UP": (*AMAZON_REVIEWS, "movielens"),
    "IP": AMAZON_REVIEWS,
    "AP": ("amazonqa",),
    "AG": ("amazonqa",),
}


def needed_sources(code: str) -> str:
    """The sources task `code` can be built from, as a phrase ("esci", "a or b")."""
    return " or ".join(TASK_SOURCES[code])


@dataclass
class TaskPlan:
    """The tasks to build (id order) and, for every other task, why not."""

    tasks: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    requested: bool = False  # build.tasks named them: an empty task is an error, not a skip


def plan_tasks(present: Sequence[str], wanted: Sequence[str] | None) -> TaskPlan:
    """Which tasks the present sources can feed, narrowed by `wanted` (build.tasks)."""
    feedable = {t.code for t in TASKS if set(TASK_SOURCES[t.code]) & set(present)}
    if wanted is not None:
        missing = [code for code in wanted if code not in feedable]
        if missing:
            raise RecFoundError(
                "build.tasks asks for "
                + "; ".join(f"{code}, which needs {needed_sources(code)}" for code in missing)
                + f"; sources present in data/: {', '.join(present) or 'none'}"
            )
    plan = TaskPlan([], requested=wanted is not None)
    for task in TASKS:
        if task.code not in feedable:
            plan.skipped[task.code] = f"needs {needed_sources(task.code)}"
        elif wanted is not None and task.code not in wanted:
            plan.skipped[task.code] = "not in build.tasks"
        else:
            plan.tasks.append(task.code)
    if not plan.tasks:
        raise RecFoundError(
            "no task can be built from the data: sources present: "
            f"{', '.join(present) or 'none'}; every task needs one of amazon_reviews, "
            "amazon_reviews_2018, esci, amazonqa, movielens, amazon_google "
            "(docs/bring-your-own-data.md)"
        )
    return plan
