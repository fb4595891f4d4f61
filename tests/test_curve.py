"""The learning curve: the validation metric of a few tasks at every saved checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from recfound.config import Config
from recfound.evaluate.curve import CURVE_COLUMNS, CURVE_FILE, curve_rows, learning_curve
from recfound.model.adapters import attach_adapter
from recfound.tasks import task_by_code
from recfound.train.checkpoint import ADAPTER_DIR, STATE_FILE, checkpoint_dir
from recfound.train.smoke import write_synthetic_unified


def constant_scorer(candidates: list[str], references: list[str]) -> list[float]:
    return [0.5] * len(candidates)


@pytest.fixture
def cfg(default_config: Config, tmp_path: Path, tiny_model_dir: Path) -> Config:
    raw = default_config.model_dump(by_alias=True)
    raw["paths"].update(
        base_model=tiny_model_dir,
        unified=tmp_path / "unified",
        checkpoints=tmp_path / "checkpoints",
        reports=tmp_path / "reports",
    )
    raw["model"]["tmole"]["task_embedding_dim"] = 16
    raw["evaluate"].update(curve_tasks=["U2I", "SR", "PM"], curve_rows=3, max_new_tokens=4)
    return Config.model_validate(raw)


def save_adapters(cfg: Config, steps: list[int]) -> None:
    """Checkpoints laid out as training does; each step's adapter moves away from step 0."""
    model = AutoModelForCausalLM.from_pretrained(cfg.paths.base_model)
    adapter = attach_adapter(model, cfg.model)
    initial = {k: v.clone() for k, v in adapter.adapter_state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    for step in steps:
        adapter.load_adapter_state_dict(
            {k: v + 0.05 * step * torch.randn(v.shape, generator=gen) for k, v in initial.items()}
        )
        out = checkpoint_dir(cfg.paths.checkpoints, step)
        adapter.save(out / ADAPTER_DIR)
        (out / STATE_FILE).write_text(json.dumps({"step": step}), encoding="utf-8")


def test_the_curve_has_one_point_per_checkpoint_and_present_curve_task(cfg: Config) -> None:
    # PM is asked for but not in the task set: it is left out, not an error
    write_synthetic_unified(
        cfg.paths.unified, train_per_task=3, validation_per_task=5, test_per_task=1,
        tasks=("U2I", "SR", "AP"),
    )  # fmt: skip
    save_adapters(cfg, [0, 2, 4])
    path = learning_curve(cfg, constant_scorer)
    assert path == Path(cfg.paths.reports) / CURVE_FILE
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CURVE_COLUMNS
    assert [(int(r["step"]), r["task"]) for r in rows] == [
        (step, code) for step in (0, 2, 4) for code in ("U2I", "SR")
    ]
    assert {r["metric"] for r in rows if r["task"] == "U2I"} == {"MRR@20"}
    assert {r["metric"] for r in rows if r["task"] == "SR"} == {"Recall@1"}
    assert all(0.0 <= float(r["score"]) <= 1.0 for r in rows)
    # the adapters differ, so the curve moves somewhere (a constant would be a bug)
    assert len({r["score"] for r in rows if r["task"] == "U2I"}) > 1


def test_no_checkpoint_or_no_curve_task_skips_with_a_reason(cfg: Config, capsys) -> None:
    write_synthetic_unified(
        cfg.paths.unified, train_per_task=2, validation_per_task=2, test_per_task=1, tasks=("AP",)
    )
    save_adapters(cfg, [0])
    assert learning_curve(cfg, constant_scorer) is None
    assert "learning curve skipped" in capsys.readouterr().out
    assert not (Path(cfg.paths.reports) / CURVE_FILE).exists()


def test_curve_rows_are_a_seeded_sample_in_split_order() -> None:
    rows = [{"id": i} for i in range(50)]
    task = task_by_code("U2I")
    first = curve_rows(rows, 10, seed=1, task=task)
    assert first == curve_rows(rows, 10, seed=1, task=task)
    assert [r["id"] for r in first] == sorted(r["id"] for r in first)
    assert first != curve_rows(rows, 10, seed=2, task=task)
    assert curve_rows(rows[:4], 10, seed=1, task=task) == rows[:4]
