"""What a pipeline run did, in one screen: each stage ran or was skipped, and why.

Before `dvc repro <stage>` the flow asks `dvc status <stage> --json` what changed: an empty
answer means DVC will skip the stage; otherwise the answer is the reason it runs, e.g.

    {"train": [{"changed deps": {"artifacts/unified": "modified",
                                 "params.yaml": {"train": "modified"}}}]}

(entries may also be plain strings such as "changed command" or "always changed"). The flow
logs the summary at the end and makes it the flow run's state message, so
`prefect deployment run … --watch` and the UI both show it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

UNCHANGED = "unchanged since its last run"


@dataclass(frozen=True)
class StageOutcome:
    """One stage of a pipeline run: whether `dvc repro` ran it, and why (or why not)."""

    stage: str
    ran: bool
    why: str


def describe_changes(entries: Sequence[Any]) -> str:
    """`dvc status` entries of one stage as a short phrase: 'params train; deps modified: data'."""
    parts: list[str] = []
    for entry in entries:
        if isinstance(entry, str):
            parts.append(entry)
            continue
        for kind, changes in entry.items():  # "changed deps" / "changed outs" / "changed params"
            what = kind.removeprefix("changed ")
            params = [
                name
                for path, change in changes.items()
                if isinstance(change, Mapping)
                for name in change
            ]
            files = [
                f"{path} {change}" for path, change in changes.items() if isinstance(change, str)
            ]
            if params:
                parts.append("params " + ", ".join(params))
            if files:
                parts.append(f"{what}: " + _first(files))
    return "; ".join(parts) or "changed"


def _first(names: Sequence[str], shown: int = 3) -> str:
    """'a, b, c and 4 more': a first run changes every dependency; a line stays a line."""
    rest = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {rest} more" if rest > 0 else "")


def stage_outcome(stage: str, status: Mapping[str, Sequence[Any]]) -> StageOutcome:
    """The outcome `dvc repro <stage>` will have, from `dvc status <stage> --json` before it.

    `status` also lists stale upstream stages; `dvc repro <stage>` runs those first, so the
    stage runs too (its inputs are about to change).
    """
    if not status:
        return StageOutcome(stage, False, UNCHANGED)
    if stage in status:
        return StageOutcome(stage, True, describe_changes(status[stage]))
    return StageOutcome(stage, True, "upstream stage changed: " + ", ".join(status))


def headline(outcomes: Sequence[StageOutcome]) -> str:
    """'3 of 7 stages ran (build, validate, train); 4 skipped as unchanged'."""
    ran = [o.stage for o in outcomes if o.ran]
    skipped = len(outcomes) - len(ran)
    if not ran:
        return f"nothing to do: all {len(outcomes)} stages unchanged since their last run"
    text = f"{len(ran)} of {len(outcomes)} stages ran ({', '.join(ran)})"
    return text + (f"; {skipped} skipped as unchanged" if skipped else "")


def summary(outcomes: Sequence[StageOutcome]) -> str:
    """The headline, then one line per stage: name, ran/skipped, why."""
    width = max((len(o.stage) for o in outcomes), default=0)
    lines = [headline(outcomes)]
    lines += [
        f"  {o.stage:<{width}}  {'ran' if o.ran else 'skipped':<7}  {o.why}" for o in outcomes
    ]
    return "\n".join(lines)


def ran(outcomes: Sequence[StageOutcome], stage: str) -> bool:
    """Whether `stage` ran in this pipeline run."""
    return any(o.stage == stage and o.ran for o in outcomes)
