"""Progress in a log file (recfound.progress); the training bar's time left (train.remaining)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tqdm.auto
import tqdm.std
from test_train_loop import (  # noqa: F401 (unified_dir: a fixture, used by name)
    make_config,
    single_thread_env,
    stage_script,
    unified_dir,
    write_params,
)

from recfound.progress import (
    INTERVAL_ENV,
    LIBRARY_BARS_OFF,
    LineBar,
    TerminalBar,
    progress,
    route_library_bars,
)
from recfound.train.remaining import RemainingTime

ROOT = Path(__file__).resolve().parents[1]
INTERVAL_S = 10.0
TERMINAL_CODES = ("\x1b", "\r")  # ANSI escapes (colour, cursor movement), in-place redraws


class Clock:
    """A hand-moved clock for tqdm (it reads `tqdm.std.time`)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimedLog(io.StringIO):
    """A log file (no terminal) that notes the clock at each line written."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock
        self.times: list[float] = []

    def write(self, text: str) -> int:
        self.times += [self.clock()] * text.count("\n")
        return super().write(text)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(tqdm.std, "time", fake)
    monkeypatch.setenv(INTERVAL_ENV, str(INTERVAL_S))
    return fake


def run_to_file(argv: list[str], env: dict[str, str], log: Path) -> tuple[str, list[str]]:
    """Run `argv` with stdout and stderr going to the file `log` (no terminal); its text, and
    its lines once checked plain (assert_plain_lines)."""
    with log.open("w") as out:
        done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=300)
    text = log.read_text()
    assert done.returncode == 0, text[-2000:]
    return text, assert_plain_lines(text)


def assert_plain_lines(text: str) -> list[str]:
    assert not any(code in text for code in TERMINAL_CODES), repr(text)
    assert text.endswith("\n")
    return text.splitlines()


def test_a_log_gets_a_line_per_interval_and_one_at_the_end(clock: Clock) -> None:
    log = TimedLog(clock)
    start, step_s = clock.now, 3.0
    bar = progress(total=12, desc="evaluate recfound", unit="task", file=log)
    assert isinstance(bar, LineBar)
    for _ in range(12):
        clock.now += step_s
        bar.update(1)
    bar.close()

    lines = assert_plain_lines(log.getvalue())
    assert lines[:-1] == [
        "evaluate recfound: 4/12 tasks, 00:12 elapsed, ~00:24 left",
        "evaluate recfound: 8/12 tasks, 00:24 elapsed, ~00:12 left",
    ]
    assert lines[-1] == "evaluate recfound: 12/12 tasks in 00:36"
    gaps = [b - a for a, b in zip([start, *log.times], log.times, strict=False)]
    assert all(gap >= INTERVAL_S for gap in gaps[:-1])  # the last line comes at the end
    assert max(gaps) <= INTERVAL_S + step_s  # never silent longer while work advances


def test_nested_bars_in_a_log_print_lines_without_cursor_movement(clock: Clock) -> None:
    log = TimedLog(clock)
    for _ in progress(range(2), desc="outer", unit="task", file=log):
        for _ in progress(range(4), desc="inner", unit="batch", leave=None, file=log):
            clock.now += 4.0

    lines = assert_plain_lines(log.getvalue())
    assert lines == [
        "inner: 3/4 batches, 00:12 elapsed, ~00:04 left",
        "inner: 4/4 batches in 00:16",
        "outer: 1/2 tasks, 00:16 elapsed, ~00:16 left",
        "inner: 3/4 batches, 00:12 elapsed, ~00:04 left",
        "inner: 4/4 batches in 00:16",
        "outer: 2/2 tasks in 00:32",
    ]


def test_a_given_time_left_replaces_tqdms_in_a_log_and_on_a_terminal(clock: Clock) -> None:
    log, terminal = TimedLog(clock), Terminal()
    bars = [progress(total=4, desc="train", unit="step", file=file) for file in (log, terminal)]
    assert isinstance(bars[1], TerminalBar)
    clock.now += INTERVAL_S
    for bar in bars:
        bar.set_remaining(100.0)
        bar.set_postfix({"loss": "0.500"}, refresh=False)
        bar.update(1)

    assert log.getvalue() == "train: 1/4 steps, 00:10 elapsed, ~01:40 left, loss=0.500\n"
    assert "1/4 [00:10<01:40" in terminal.getvalue()


def test_the_time_left_adds_steps_and_validation_passes_at_their_typical_durations() -> None:
    eta = RemainingTime(total_steps=10, validation_steps=[0, 5])
    assert eta.seconds(0) is None  # nothing timed yet
    eta.add_validation(30.0)  # the pass before step 0
    assert eta.seconds(0) is None  # no step timed yet
    for seconds in (2.0, 2.0, 50.0):  # one slow step (a checkpoint, a warm-up) ...
        eta.add_step(seconds)
    # ... leaves the median: 7 steps × 2 s + the pass before step 5 × 30 s
    assert eta.seconds(3) == 7 * 2.0 + 30.0
    eta.add_validation(40.0)
    assert eta.seconds(5) == 5 * 2.0 + 35.0  # step 5's pass still to run
    assert eta.seconds(6) == 4 * 2.0  # no pass left
    assert eta.seconds(10) == 0.0


def test_a_training_stage_written_to_a_file_has_plain_progress_lines(
    tmp_path: Path,
    tiny_model_dir: Path,
    unified_dir: Path,  # noqa: F811 (test_train_loop's fixture)
) -> None:
    cfg = make_config(tmp_path, tiny_model_dir, unified_dir, steps=4, save_every=2)
    params = write_params(cfg, tmp_path / "params.yaml")
    env = {**single_thread_env(), INTERVAL_ENV: "0"}  # a line at every update
    env.pop("TQDM_DISABLE")
    text, lines = run_to_file(
        [sys.executable, str(stage_script(tmp_path)), str(params)], env, tmp_path / "train.log"
    )
    assert any(line.startswith("validation loss before training: ") for line in lines), text
    assert any(line.startswith("S2Sched validation: ") for line in lines), text
    assert any(line.startswith("train: 4/4 steps in ") for line in lines), text


# --- other libraries' bars (route_library_bars, at CLI start)

# What a stage's libraries draw, after `recfound` started as the CLI starts any command:
# transformers loading and writing weights, its GGUF conversion loop (tqdm.auto, as
# transformers.modeling_gguf_pytorch_utils draws it), datasets saving, MLflow's artifact
# download. argv: work dir, params.yaml, tiny model dir.
LIBRARY_BARS_SCRIPT = """
import os, sys
from pathlib import Path

work, params, model_dir = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
(work / "data").mkdir()
(work / "data" / "raw.txt").write_text("x")
os.chdir(work)
from recfound.cli import app

app(["data", "ensure", "--params", params], standalone_mode=False)  # the CLI's start

from transformers import AutoModelForCausalLM
from transformers import modeling_gguf_pytorch_utils as gguf

AutoModelForCausalLM.from_pretrained(model_dir).save_pretrained(work / "saved")
for _ in gguf.tqdm(range(30), desc="Converting and de-quantizing GGUF tensors..."):
    pass
import datasets

datasets.Dataset.from_dict({"a": list(range(100))}).save_to_disk(str(work / "ds"))
import mlflow

mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
(work / "art").mkdir()
for i in range(3):
    (work / "art" / f"f{i}.txt").write_text("x")
with mlflow.start_run() as run:
    mlflow.log_artifacts(str(work / "art"), "a")
mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(work / "down"))
print("done", file=sys.stderr)
"""


def test_library_bars_of_a_stage_written_to_a_file_leave_no_carriage_return(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    script = tmp_path / "stage_like.py"
    script.write_text(LIBRARY_BARS_SCRIPT)
    env = {**single_thread_env(), INTERVAL_ENV: "0"}
    for name in ("TQDM_DISABLE", *LIBRARY_BARS_OFF):  # the bars as a user's shell has them
        env.pop(name, None)
    (tmp_path / "work").mkdir()
    argv = [sys.executable, str(script), str(tmp_path / "work"), str(ROOT / "params.yaml")]
    text, lines = run_to_file([*argv, str(tiny_model_dir)], env, tmp_path / "stage.log")
    assert any(line.startswith("Loading weights: ") for line in lines), text
    assert any(line.startswith("Writing model shards: 1/1 in ") for line in lines), text
    assert "Converting and de-quantizing GGUF tensors...: 30/30 in " in text
    assert "Downloading artifacts" not in text and "Saving the dataset" not in text  # off
    assert lines[-1] == "done"


def test_library_bars_are_left_alone_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for name in LIBRARY_BARS_OFF:
        monkeypatch.setenv(name, "")  # noted, so that the test's own settings are undone
        monkeypatch.delenv(name)
    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.auto.tqdm)  # restored after the test
    before = tqdm.auto.tqdm
    route_library_bars(Terminal())
    assert tqdm.auto.tqdm is before
    assert not any(name in os.environ for name in LIBRARY_BARS_OFF)
    route_library_bars(io.StringIO())  # a log file
    assert issubclass(tqdm.auto.tqdm, LineBar)
    assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
