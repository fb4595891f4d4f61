"""Bring your own data: every stage after `build` on a dataset that holds only some tasks.

A user with MovieLens alone, Amazon–Google alone or only retrieval data gets a unified dataset
with a subset of the 13 tasks (the build writes no rows for the others). Train -> merge ->
export -> evaluate run on the tiny model for a generative-only, an embedding-only and a mixed
task set, and the unified GX suites pass on such a set.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from recfound.config import Config
from recfound.data.unified import load_unified, present_tasks
from recfound.errors import DataError
from recfound.model.export import EXPORT_INDEX_FILE, TASK_INFO_FILE
from recfound.tasks import task_by_code
from recfound.train.loop import make_accelerator, trained_kinds
from recfound.train.smoke import synthetic_unified, write_synthetic_unified

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("amazon_reviews", "movielens")
# (task codes, sources of their rows): what three kinds of user would bring.
SUBSETS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "generative-only": (("SR", "PM", "UP"), ("amazon_google",)),
    "embedding-only": (("U2I", "Q2I", "I2I"), ("amazon_reviews",)),
    "mixed": (("U2I", "SR", "UP"), SOURCES),  # MovieLens-like tasks from two sources
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def exact_match(candidates: list[str], references: list[str]) -> list[float]:
    """Stands in for BERTScore (tests/test_metrics.py covers it): no encoder to load."""
    return [float(c == r) for c, r in zip(candidates, references, strict=True)]


def subset_config(root: Path, model_dir: Path, **overrides: Any) -> Config:
    """Every output under `root`; a few training steps, sized for the tiny model."""
    raw: dict[str, Any] = {
        "paths": {
            "base_model": str(model_dir),
            "unified": str(root / "unified"),
            "checkpoints": str(root / "checkpoints"),
            "adapter": str(root / "adapter"),
            "train_metrics": str(root / "train"),
            "merged": str(root / "merged"),
            "reports": str(root / "reports"),
        },
        "model": {"tmole": {"task_embedding_dim": 16}},
        "train": {"steps": 4, "save_every": 2, "warmup_steps": 1, "eval_batch_size": 4},
        "s2sched": {"warmup_steps": 2, "update_interval": 2, "val_batch_size": 2},
        "merge": {"checkpoints": "all"},
        # catalogue_k []: the synthetic splits come without the build's catalogue, which
        # full-catalogue retrieval needs (tests/test_full_catalogue.py covers it)
        "evaluate": {
            "max_new_tokens": 4,
            "batch_size": 4,
            "baselines": ["popularity", "random"],
            "catalogue_k": [],
        },
        "tracking": {"enabled": False},
    }
    for section, values in overrides.items():
        raw[section] = {**raw.get(section, {}), **values}
    return Config.model_validate(raw)


def write_subset(cfg: Config, codes: tuple[str, ...], sources: tuple[str, ...]) -> Path:
    return write_synthetic_unified(
        cfg.paths.unified,
        train_per_task=4,
        validation_per_task=2,
        test_per_task=2,
        tasks=codes,
        sources=sources,
    )


@pytest.fixture(scope="module", params=list(SUBSETS))
def pipeline(request, tmp_path_factory, tiny_model_dir):
    """train -> merge (with the per-task export) -> evaluate on one task subset."""
    from recfound.evaluate.stage import evaluate_all
    from recfound.merge.stage import run as merge
    from recfound.train.stage import train

    codes, sources = SUBSETS[request.param]
    cfg = subset_config(tmp_path_factory.mktemp(request.param), tiny_model_dir)
    write_subset(cfg, codes, sources)
    outcome = train(cfg)
    merge(cfg)
    evaluate_all(cfg, exact_match)
    return request.param, codes, cfg, outcome


def test_the_task_set_is_the_tasks_with_training_rows(pipeline):
    _, codes, cfg, _ = pipeline
    assert [t.code for t in present_tasks(load_unified(cfg.paths.unified))] == list(codes)


def test_training_logs_validates_and_plots_only_the_present_tasks(pipeline):
    name, codes, cfg, outcome = pipeline
    records = [json.loads(line) for line in (cfg.paths.train_metrics / "steps.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        per_task = {k.split("/")[1] for k in record if "/" in k}
        assert per_task <= set(codes)
        assert {f"ratio/{c}" for c in codes} <= record.keys()
        assert record["loss"] == pytest.approx(record["loss_emb"] + record["loss_gen"], rel=1e-5)
    kinds = {task_by_code(c).kind.value for c in codes}
    if "embedding" not in kinds:  # no embedding part in any micro-batch
        assert all(r["loss_emb"] == 0.0 for r in records)
    if "generative" not in kinds:
        assert all(r["loss_gen"] == 0.0 for r in records)
    assert {k for k in records[0] if k.startswith("val_loss/")} == {f"val_loss/{c}" for c in codes}
    val_loss = json.loads((cfg.paths.train_metrics / "val_loss.json").read_text())
    assert list(val_loss["tasks"]) == list(codes)
    assert {task_by_code(c).id for c in codes} == set(outcome.val_loss_after)
    with open(cfg.paths.train_metrics / "ratio_per_task.csv") as handle:
        assert {row["task"] for row in csv.DictReader(handle)} == set(codes)


def test_merge_exports_and_records_only_the_present_tasks(pipeline):
    _, codes, cfg, _ = pipeline
    merged = cfg.paths.merged
    assert json.loads((merged / "merge.json").read_text())["tasks"] == list(codes)
    exported = sorted(p.name for p in (merged / "tasks").iterdir() if p.is_dir())
    assert exported == sorted(codes)
    assert json.loads((merged / "tasks" / EXPORT_INDEX_FILE).read_text())["tasks"] == list(codes)
    for code in codes:
        assert json.loads((merged / "tasks" / code / TASK_INFO_FILE).read_text())["code"] == code


def test_evaluation_reports_the_present_tasks_and_omits_empty_tables(pipeline):
    name, codes, cfg, _ = pipeline
    reports = cfg.paths.reports
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics["recfound"]) == set(metrics["no_merge"]) == set(codes)
    kinds = {task_by_code(c).kind.value for c in codes}
    assert set(metrics["average_rank"]) == kinds
    assert "recfound" in metrics["average_rank"][next(iter(kinds))]
    popularity = {"SR", "U2I"} & set(codes)
    assert set(metrics.get("popularity", {})) == popularity  # only where it applies
    results = (reports / "results.md").read_text()
    if "generative" not in kinds:
        assert "_Generative tasks (Table 2) omitted: no generative task" in results
        assert "## Invalid outputs" not in results
    if "embedding" not in kinds:
        assert "_Embedding tasks (Table 3) omitted: no embedding task" in results
    assert "_no results_" not in results
    for figure in ("routing_similarity.png", "sample_ratios.png"):
        assert (reports / "figures" / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_task_from_several_sources_is_also_reported_per_source(pipeline):
    name, codes, cfg, _ = pipeline
    metrics = json.loads((cfg.paths.reports / "metrics.json").read_text())
    results = (cfg.paths.reports / "results.md").read_text()
    if name != "mixed":  # one source: nothing changes
        assert all("sources" not in entry for entry in metrics["recfound"].values())
        assert "## Results per source" not in results
        return
    for code in codes:
        entry = metrics["recfound"][code]
        assert set(entry["sources"]) == set(SOURCES)
        assert sum(part["n"] for part in entry["sources"].values()) == entry["n"]
    assert "## Results per source" in results
    assert "| U2I | U2I[amazon_reviews] | U2I[movielens] |" in results


def test_the_unified_suites_pass_on_a_task_subset(tmp_path):
    from recfound.data import validate
    from recfound.data.gx_frames import unified_batches
    from recfound.data.gx_suites import load_suites

    for name, (codes, sources) in SUBSETS.items():
        cfg = subset_config(tmp_path / name, tmp_path)
        write_subset(cfg, codes, sources)
        suites_dir = ROOT / "expectations"
        runner = validate.SuiteRunner(
            validate.gx_context(tmp_path / name / "docs"), load_suites(suites_dir), cfg.validate_
        )
        outcomes = [runner.run(batch, suites_dir) for batch in unified_batches(cfg.paths.unified)]
        failures = [f"{o.batch}: {e.describe()}" for o in outcomes for e in o.failures]
        assert not failures, (name, failures)


def test_ddp_looks_for_unused_parameters_only_when_a_kind_is_not_trained(tmp_path):
    cfg = subset_config(tmp_path, tmp_path)
    generative = [task_by_code(c) for c in SUBSETS["generative-only"][0]]
    mixed = [task_by_code(c) for c in SUBSETS["mixed"][0]]
    assert trained_kinds(cfg.train, generative) == {"generative"}
    assert trained_kinds(cfg.train, mixed) == {"embedding", "generative"}
    assert make_accelerator(cfg.train, generative).ddp_handler.find_unused_parameters
    assert not make_accelerator(cfg.train, mixed).ddp_handler.find_unused_parameters


def test_training_refuses_a_task_set_it_cannot_train(tmp_path, tiny_model_dir):
    from recfound.train.stage import train

    no_slots = subset_config(tmp_path / "a", tiny_model_dir, train={"embedding_per_batch": 0})
    write_subset(no_slots, SUBSETS["embedding-only"][0], ("x",))
    with pytest.raises(DataError, match="embedding_per_batch is 0: nothing to train"):
        train(no_slots)
    cfg = subset_config(tmp_path / "b", tiny_model_dir)
    dataset = synthetic_unified(train_per_task=4, validation_per_task=2, tasks=("SR", "PM"))
    dataset["validation"] = dataset["validation"].filter(lambda r: r["task"] != "PM")
    dataset.save_to_disk(str(cfg.paths.unified))
    with pytest.raises(DataError, match="PM, which have training rows"):
        train(cfg)


def test_ablate_trains_and_evaluates_a_variant_on_a_task_subset(
    tmp_path, tiny_model_dir, monkeypatch
):
    from recfound.evaluate import ablate, report
    from recfound.evaluate import stage as evaluate_stage

    monkeypatch.setattr(evaluate_stage, "text_scorer", lambda cfg: exact_match)
    cfg = subset_config(tmp_path, tiny_model_dir)
    codes = SUBSETS["generative-only"][0]
    write_subset(cfg, codes, ("amazon_google",))
    (out,) = ablate.ablate(cfg, ["no_s2sched"])
    loaded = report.read_variants(out.parent, cfg.evaluate.rank_cutoff)
    assert set(loaded["no_s2sched"]) == set(codes)
