"""Progress of every pass, shown the one way its output can take: a bar or plain lines.

`progress(...)` is the factory every module uses instead of tqdm (same call shape: iterable,
total, desc, unit, leave, disable, postfix, and tqdm's other options passed through).

- On a terminal (stderr is a TTY): tqdm's bar, redrawn in place; nested bars stack below.
- Anywhere else (a stage under DVC and Prefect, output redirected to a file): plain, complete
  lines, e.g. `evaluate recfound: 5/13 tasks, 01:03 elapsed, ~01:19 left`, at most one per
  bar every `line_interval_s()` seconds while it advances, and one when it ends
  (`evaluate recfound: 13/13 tasks in 02:21`). No carriage return, no cursor movement: tqdm
  redraws with `\\r` and moves nested bars with ANSI cursor-up codes, which a log keeps as
  hundreds of broken lines.

The interval is the TQDM_MININTERVAL variable, which flows/pipeline.py sets for each stage from
`orchestration.progress_interval_s` (tqdm reads it too); unset, that setting's default.

A bar may be given a better estimate of its time left than tqdm's (total − n) / rate:
`bar.set_remaining(seconds)` (the training loop's, recfound.train.remaining).

transformers' own bars ("Loading weights", "Writing model shards") are routed through
`progress` at import, through the hook transformers offers for it.

Other libraries draw their own bars, with `\\r`, whatever the output. `route_library_bars()`,
called by the `recfound` CLI before any command runs, takes them off a log (stderr not a TTY):
- bars drawn with `tqdm.auto.tqdm` (transformers' GGUF conversion, "Converting and
  de-quantizing GGUF tensors") become plain lines (`AutoLineBar`);
- MLflow's artifact upload/download bars are turned off (`MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR`),
  and so are the Hugging Face Hub's (`HF_HUB_DISABLE_PROGRESS_BARS`) and datasets'
  (`HF_DATASETS_DISABLE_PROGRESS_BARS`: "Saving the dataset", "Loading dataset from disk").
A variable a user set stays as set; the variables also reach the processes a command starts.
On a terminal nothing changes: the bars are drawn there as their libraries draw them.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping
from typing import IO, Any

from rich.console import Console
from tqdm import auto as tqdm_auto
from tqdm import tqdm
from transformers.utils import logging as transformers_logging

from recfound.config import OrchestrationConfig

INTERVAL_ENV = "TQDM_MININTERVAL"  # flows/pipeline.py `stage_env`
# tqdm's default layout with {remaining} (its own estimate) replaced by {left} (ours).
REMAINING_BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{left}, {rate_fmt}{postfix}]"


def on_terminal(file: IO[str] | None = None) -> bool:
    """Whether `file` (default: stderr, where progress goes) is an interactive terminal."""
    file = sys.stderr if file is None else file
    try:
        return file.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


def line_interval_s() -> float:
    """Seconds between two lines of one bar when not on a terminal (module docstring)."""
    raw = os.environ.get(INTERVAL_ENV, "").strip()
    if raw:
        return float(raw)
    return OrchestrationConfig.model_fields["progress_interval_s"].default


class ProgressBar(tqdm):
    """tqdm with an optional estimate of the time left that replaces tqdm's own."""

    remaining_s: float | None = None

    def set_remaining(self, seconds: float | None) -> None:
        """Show `seconds` as the time left (None: tqdm's estimate) from the next refresh on."""
        self.remaining_s = seconds


class TerminalBar(ProgressBar):
    """tqdm's bar, with `set_remaining`'s estimate in place of tqdm's when one is given."""

    @property
    def format_dict(self) -> dict[str, Any]:
        fields = super().format_dict
        if self.remaining_s is not None and fields["total"] and not fields["bar_format"]:
            fields["bar_format"] = REMAINING_BAR_FORMAT
            fields["left"] = self.format_interval(self.remaining_s)
        return fields


class LineBar(ProgressBar):
    """A bar that prints plain lines (module docstring): one every `mininterval` seconds at
    most, from the update that finds it due, and a last one when it closes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # tqdm's __init__ refreshes once: no line at the start, the first is due an interval on.
        self._line_at = math.inf
        kwargs["mininterval"] = line_interval_s()
        # Every update checks the clock: tqdm's adaptive miniters would skip updates once the
        # pace slows and leave the log silent for longer than the interval.
        kwargs["miniters"] = 1
        super().__init__(*args, **kwargs)
        self._line_at = getattr(self, "start_t", math.inf)  # no start_t: disabled

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        # `msg` is tqdm clearing the bar ("") and `pos` its place among nested bars: a printed
        # line needs neither.
        if msg is not None or self._time() - self._line_at < self.mininterval or self._ended():
            return False
        self._print(self._line())
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear: a printed line stays."""

    def moveto(self, n: int) -> None:
        """No cursor movement: lines follow one another."""

    def close(self) -> None:
        if not getattr(self, "disable", True):
            self._print(self._line(final=True))
            self.leave = False  # tqdm's close would redraw the bar once more
        super().close()

    def _ended(self) -> bool:
        """At the total: the closing line says it (the bar closes next)."""
        return self.total is not None and self.n >= self.total

    def _print(self, line: str) -> None:
        self.fp.write(line + "\n")
        self.fp.flush()
        self._line_at = self._time()

    def _line(self, final: bool = False) -> str:
        """`desc: n/total unit, mm:ss elapsed, ~mm:ss left, postfix`; the last line
        `desc: n/total unit in mm:ss, postfix`."""
        unit = "" if self.unit == "it" else _plural(self.unit.strip())  # "it" says nothing
        count = f"{self.n}/{self.total}" if self.total is not None else f"{self.n}"
        parts = [f"{self.desc}: " if self.desc else "", count, f" {unit}" if unit else ""]
        elapsed = self.format_interval(self._time() - self.start_t)
        if final:
            parts.append(f" in {elapsed}")
        else:
            parts.append(f", {elapsed} elapsed")
            left = self._left_s()
            if left is not None:
                parts.append(f", ~{self.format_interval(round(left))} left")
        if self.postfix:
            parts.append(f", {self.postfix}")
        return "".join(parts)

    def _left_s(self) -> float | None:
        """The estimate given by `set_remaining`, else tqdm's: what is left at its rate (the
        recent one, else the average); None without a total or a rate."""
        if self.remaining_s is not None:
            return self.remaining_s
        elapsed, done = self._time() - self.start_t, self.n - self.initial
        rate = self.format_dict["rate"] or (done / elapsed if elapsed and done else None)
        if not rate or self.total is None:
            return None
        return max(self.total - self.n, 0) / rate


def _plural(unit: str) -> str:
    """A line counts in plural: "task" -> "tasks", "batch" -> "batches"; a symbol ("B") stays."""
    if len(unit) < 2 or not (unit.isalpha() and unit.islower()):
        return unit
    return unit + ("es" if unit.endswith(("s", "x", "ch", "sh")) else "s")


def progress(
    iterable: Iterable[Any] | None = None,
    *,
    total: float | None = None,
    desc: str | None = None,
    unit: str = "it",
    leave: bool | None = True,
    disable: bool = False,
    postfix: Mapping[str, Any] | str | None = None,
    file: IO[str] | None = None,
    **options: Any,
) -> ProgressBar:
    """A progress bar over `iterable` (or updated by hand up to `total`), shown as the output
    allows (module docstring). The arguments are tqdm's; `leave=None` keeps the bar only when
    it is not nested in another. `disable=False` leaves tqdm's TQDM_DISABLE variable in force.
    """
    if disable:
        options["disable"] = True
    bar_class = TerminalBar if on_terminal(file) else LineBar
    return bar_class(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        leave=leave,
        postfix=postfix,
        file=file,
        **options,
    )


def _transformers_bar(factory: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """transformers' bar through `progress`; its empty shim, where a user turned transformers'
    bars off, stays as it is."""
    if factory is not tqdm_auto.tqdm or len(args) > 1:  # only the iterable is positional here
        return factory(*args, **kwargs)
    return progress(*args, **kwargs)


transformers_logging.set_tqdm_hook(_transformers_bar)


class AutoLineBar(LineBar, tqdm_auto.tqdm):
    """What `tqdm.auto.tqdm` is once `route_library_bars` ran off a terminal: a `LineBar` that
    keeps tqdm.auto's async iteration for the libraries that use it."""


# The variables that turn a library's own bars off (names as of mlflow 3.17, huggingface_hub
# 2.4 and datasets 5.2, which read them: mlflow at each transfer, the others at import).
LIBRARY_BARS_OFF = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
}


def route_library_bars(file: IO[str] | None = None) -> None:
    """Off a terminal (`file`, default stderr, not a TTY), keep other libraries' bars out of the
    log (module docstring); on one, change nothing. Safe to call more than once."""
    if on_terminal(file):
        return
    for name, value in LIBRARY_BARS_OFF.items():
        os.environ.setdefault(name, value)
    if not issubclass(tqdm_auto.tqdm, LineBar):
        tqdm_auto.tqdm = AutoLineBar
    # Already imported, these two read their variable too early: tell them directly, unless
    # the user asked for the bars (variable set to a false value).
    if "huggingface_hub" in sys.modules and _bars_off("HF_HUB_DISABLE_PROGRESS_BARS"):
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    if "datasets" in sys.modules and _bars_off("HF_DATASETS_DISABLE_PROGRESS_BARS"):
        from datasets.utils import disable_progress_bars as disable_datasets_bars

        disable_datasets_bars()


def _bars_off(variable: str) -> bool:
    return os.environ.get(variable, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


# Columns of a rich table written to a file: rich assumes 80 there and folds long cells (file
# paths) mid-word; a log line may be as long as it needs.
LOG_COLUMNS = 240


def console() -> Console:
    """rich's Console for tables and notes: the terminal's width on one, else LOG_COLUMNS (and,
    as rich does without a terminal, no colour codes)."""
    return Console() if on_terminal(sys.stdout) else Console(width=LOG_COLUMNS)
