"""The headline metrics: one primary metric per task and system, readable in a terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from recfound.evaluate.bootstrap import Interval
from recfound.evaluate.headline import cell, headline, write_headline
from recfound.evaluate.protocol import TaskResult, primary_metric
from recfound.stages import resolve_dvc_yaml
from recfound.tasks import TASKS

SCRIPTS = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("recfound", "base", "minilm", "popularity", "random")
TERMINAL_COLUMNS = 120


def result(code: str, score: float, low: float | None = None, high: float | None = None):
    primary = primary_metric(next(t for t in TASKS if t.code == code), 20)
    intervals = {} if low is None else {primary: Interval(low, high)}
    return TaskResult(code, primary, {primary: score}, n=16, intervals=intervals)


def test_a_cell_is_the_score_and_its_interval_without_leading_zeros() -> None:
    assert cell(result("SR", 0.2149, 0.1695, 0.2652)) == ".21 [.17,.27]"
    assert cell(result("SR", 1.0, 0.95, 1.0)) == "1 [.95,1]"
    assert cell(result("SR", 0.5)) == ".50"  # no interval computed


def test_each_task_lists_its_metric_and_only_the_systems_that_answer_it() -> None:
    results = {
        "recfound": {"SR": result("SR", 0.1, 0.0, 0.2), "U2I": result("U2I", 0.3, 0.2, 0.4)},
        "minilm": {"U2I": result("U2I", 0.25, 0.2, 0.3)},
        "no_merge": {"SR": result("SR", 0.9, 0.8, 1.0)},
    }
    rows = headline(results, ["recfound", "minilm"])
    assert rows == {
        "SR": {"metric": "Recall@1", "recfound": ".10 [.00,.20]"},
        "U2I": {"metric": "MRR@20", "recfound": ".30 [.20,.40]", "minilm": ".25 [.20,.30]"},
    }


def test_dvc_metrics_show_of_a_full_headline_fits_a_terminal(tmp_path: Path) -> None:
    """13 tasks x 5 systems with the widest cells there are: one row per task, under 120."""
    widest = {name: {t.code: result(t.code, 1.0, 0.95, 1.0) for t in TASKS} for name in SYSTEMS}
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([str(SCRIPTS / "dvc"), "init", "-q"], cwd=repo, check=True)
    write_headline(repo / "reports" / "headline", widest, SYSTEMS)
    declared = [
        next(iter(entry)) if isinstance(entry, dict) else entry
        for stage in resolve_dvc_yaml(ROOT)["stages"].values()  # ${paths.reports} resolved
        for entry in stage.get("metrics", [])
    ]
    assert declared == ["reports/headline"]  # any other metric file would widen the table
    (repo / "dvc.yaml").write_text("metrics:\n  - reports/headline\n")
    shown = subprocess.run(
        [str(SCRIPTS / "dvc"), "metrics", "show"],
        cwd=repo, capture_output=True, text=True, check=True,
        env={"COLUMNS": str(TERMINAL_COLUMNS), "PATH": str(SCRIPTS) + ":/usr/bin:/bin"},
    ).stdout.splitlines()  # fmt: skip
    assert len(shown) == 1 + len(TASKS)
    assert max(map(len, shown)) <= TERMINAL_COLUMNS, "\n".join(shown)
    assert shown[0].split() == [
        "Path",
        "base",
        "metric",
        "minilm",
        "popularity",
        "random",
        "recfound",
    ]


@pytest.mark.parametrize("code", ["SR", "U2I"])
def test_the_files_are_json_objects_named_by_task(tmp_path: Path, code: str) -> None:
    write_headline(tmp_path / "h", {"recfound": {code: result(code, 0.5, 0.4, 0.6)}}, ["recfound"])
    assert json.loads((tmp_path / "h" / f"{code}.json").read_text())["recfound"] == ".50 [.40,.60]"
