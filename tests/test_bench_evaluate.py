"""bench/evaluate.py's bookkeeping: interleaved rounds, the old side's paths, the comparison
of the two metrics.json (the timed evaluations themselves need a run's artifacts)."""

from __future__ import annotations

import sys
from pathlib import Path

from recfound.config import Config

# bench/ is run from the repository root (`python -m bench.evaluate`), not installed
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.evaluate import compare, round_order, with_paths  # noqa: E402


def test_rounds_alternate_which_side_goes_first() -> None:
    assert round_order(3) == [("old", "new"), ("new", "old"), ("old", "new")]


def test_the_old_side_reads_this_runs_artifacts_and_writes_its_own_reports(tmp_path) -> None:
    cfg = Config()
    old = {"paths": {"base_model": "elsewhere", "reports": "reports", "gone": "x"}, "seed": 1}
    doc = with_paths(old, cfg, tmp_path / "old-reports")
    assert doc["paths"] == {
        "base_model": str(cfg.paths.base_model),
        "reports": str(tmp_path / "old-reports"),
        "gone": "x",  # a path this revision no longer has stays the old one's
    }
    assert doc["seed"] == 1 and old["paths"]["base_model"] == "elsewhere"  # a copy


def test_the_comparison_lists_every_changed_primary_metric() -> None:
    old = {
        "recfound": {"SR": {"Recall@1": 0.5, "n": 16}, "U2I": {"MRR@20": 0.3, "n": 100}},
        "base": {"SR": {"Recall@1": 0.25, "n": 16}, "U2I": {"MRR@20": 0.35, "n": 100}},
        "average_rank": {"generative": {}},
    }
    new = {
        "recfound": {"SR": {"Recall@1": 0.5, "n": 16}, "U2I": {"MRR@20": 0.4, "n": 100}},
        "base": old["base"],
    }
    result = compare(old, new, cutoff=20)
    assert result["differences"] == [{"system": "recfound", "task": "U2I", "old": 0.3, "new": 0.4}]
    assert not result["same_primary_metrics"]
    assert result["recfound_above_base"] == {"old": 1, "new": 2}
    assert compare(old, old, cutoff=20)["same_primary_metrics"]
