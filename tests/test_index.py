"""Full-catalogue retrieval: the faiss index (exact and HNSW), exclusions, persistence,
ranking metrics and catalogue embedding."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from recfound.config import Config, IndexConfig
from recfound.errors import DataError
from recfound.index.embed import embed_catalogue
from recfound.index.metrics import ndcg_at_k, recall_at_k
from recfound.index.store import CatalogueIndex, index_kind
from recfound.index.synthetic import LatentVectors
from recfound.tasks import task_by_code

CFG = IndexConfig()
HIDDEN = 576  # SmolLM2-135M's hidden size: the vectors the index holds in the pipeline


def catalogue(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, list[str], LatentVectors]:
    draw = LatentVectors(dim, seed)
    return draw.draw(n), [f"item{i:06d}" for i in range(n)], draw


def true_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of each query's k highest inner products, by numpy."""
    return np.argsort(-(queries @ vectors.T), axis=1, kind="stable")[:, :k]


def test_small_catalogues_get_an_exact_index_that_returns_the_true_top_k() -> None:
    vectors, ids, draw = catalogue(3000, 64)
    queries = draw.draw(50)
    index = CatalogueIndex.build(vectors, ids, CFG)
    assert index.kind == "exact" == index_kind(CFG.exact_max_items, CFG)
    assert index_kind(CFG.exact_max_items + 1, CFG) == "hnsw"
    found = index.search(queries, 10)
    expected = true_top(vectors, queries, 10)
    assert found.ids == [[ids[j] for j in row] for row in expected]
    for q, scores in enumerate(found.scores):
        np.testing.assert_allclose(scores, vectors[expected[q]] @ queries[q], atol=1e-5)


def test_excluded_items_are_skipped_and_k_items_still_returned() -> None:
    vectors, ids, draw = catalogue(2000, 32, seed=1)
    queries = draw.draw(8)
    order = np.argsort(-(queries @ vectors.T), axis=1, kind="stable")
    # Query 0 excludes its 50 best items: more than the first fetch (k · overfetch = 20).
    exclude = [{ids[j] for j in order[0, :50]}, set(), {ids[order[2, 0]], "not-an-item"}]
    exclude += [set()] * 5
    found = CatalogueIndex.build(vectors, ids, CFG).search(queries, 10, exclude)
    assert all(len(row) == 10 for row in found.ids)
    assert found.ids[0] == [ids[j] for j in order[0, 50:60]]
    assert found.ids[1] == [ids[j] for j in order[1, :10]]
    assert found.ids[2] == [ids[j] for j in order[2, 1:11]]


def test_a_catalogue_smaller_than_k_after_exclusions_returns_what_is_left() -> None:
    vectors, ids, draw = catalogue(12, 16, seed=2)
    found = CatalogueIndex.build(vectors, ids, CFG).search(draw.draw(1), 10, [set(ids[:5])])
    assert sorted(found.ids[0]) == ids[5:]
    assert np.all(np.diff(found.scores[0]) <= 0), "best first"


def test_non_unit_vectors_are_refused() -> None:
    vectors, ids, _ = catalogue(10, 8)
    with pytest.raises(ValueError, match="unit-norm"):
        CatalogueIndex.build(2 * vectors, ids, CFG)


def test_hnsw_recall_at_10_against_exact_search_is_at_least_099(one_thread) -> None:
    vectors, ids, draw = catalogue(20_000, HIDDEN, seed=3)
    queries = draw.draw(200)
    cfg = CFG.model_copy(update={"exact_max_items": 10_000})
    approximate = CatalogueIndex.build(vectors, ids, cfg)
    assert approximate.kind == "hnsw"
    exact = CatalogueIndex.build(vectors, ids, CFG).search(queries, 10)
    found = approximate.search(queries, 10)
    recall = recall_at_k(found.ids, exact.ids, 10)
    assert recall.mean() >= 0.99, recall.mean()


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
def test_save_and_load_give_identical_results(tmp_path: Path, kind: str) -> None:
    vectors, ids, draw = catalogue(1500, 48, seed=4)
    queries = draw.draw(20)
    prints = {"model": "m1", "catalogue": "c1", "task": "U2I"}
    built = CatalogueIndex.build(vectors, ids, CFG, prints, kind=kind)
    built.save(tmp_path / "index")
    loaded = CatalogueIndex.load(tmp_path / "index", CFG, expect={"model": "m1"})
    assert (loaded.kind, loaded.ids, loaded.fingerprints) == (kind, ids, prints)
    np.testing.assert_array_equal(loaded.vectors(), vectors)
    before, after = (
        built.search(queries, 10, [{ids[0]}] * 20),
        loaded.search(queries, 10, [{ids[0]}] * 20),
    )
    assert before.ids == after.ids
    for a, b in zip(before.scores, after.scores, strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(DataError, match="other inputs"):
        CatalogueIndex.load(tmp_path / "index", CFG, expect={"model": "m2"})


def test_recall_and_ndcg_on_hand_computed_rankings() -> None:
    ranked = [["a", "b", "c"], ["x", "t", "y"], ["p", "q", "r"], ["a", "t1", "t2"]]
    targets = [{"a"}, {"t"}, {"z"}, {"t1", "t2", "a"}]
    np.testing.assert_allclose(recall_at_k(ranked, targets, 2), [1.0, 1.0, 0.0, 2 / 3])
    # Case 4 finds all three targets in the top 3: NDCG 1 whatever their order.
    np.testing.assert_allclose(ndcg_at_k(ranked, targets, 3), [1.0, 1 / math.log2(3), 0.0, 1.0])
    # Two targets, one found at rank 2 of k = 3: DCG 1/log2(3) over ideal 1 + 1/log2(3).
    found_second = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    np.testing.assert_allclose(ndcg_at_k([["x", "t", "y"]], [{"t", "u"}], 3), [found_second])
    with pytest.raises(ValueError, match="target"):
        recall_at_k([["a"]], [set()], 1)


def test_embed_catalogue_gives_unit_vectors_in_catalogue_order(
    default_config: Config, tiny_model_dir: Path, one_thread
) -> None:
    from recfound.model.predictor import Predictor

    predictor = Predictor.load(default_config, tiny_model_dir, None, device="cpu")
    embed = predictor.embedder(task_by_code("U2I"), batch_size=4)
    passages = [f"item {i} | Topic {i % 3} | Store {i % 2}" for i in range(11)] + ["a"]
    vectors = embed_catalogue(passages, embed, chunk_items=5, progress=False)
    assert vectors.shape == (len(passages), predictor.model.lm.config.hidden_size)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.concatenate([embed([p], "") for p in passages])
    np.testing.assert_allclose(vectors, one_by_one, atol=1e-4)
    assert not np.allclose(vectors[0], vectors[1]), "distinct passages, distinct vectors"


def test_a_model_fingerprint_is_hashed_once_while_its_files_look_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Remembered by (path, size, mtime), in this process and in the cache file for the next:
    unchanged files are not read again, a touched or rewritten one is."""
    import os

    from recfound.data import unified
    from recfound.index import fingerprint_cache as cache

    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(tmp_path / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\0" * 1000)
    (model / "config.json").write_text("{}")
    hashed: list[Path] = []
    real = unified.data_fingerprint

    def counting(directory, files=None):
        hashed.append(Path(directory))
        return real(directory, files)

    monkeypatch.setattr(unified, "data_fingerprint", counting)
    first = cache.dir_fingerprint(model)
    assert first == real(model) and len(hashed) == 1
    assert cache.dir_fingerprint(model) == first and len(hashed) == 1
    monkeypatch.setattr(cache, "_remembered", {})  # a new process: the cache file answers
    assert cache.dir_fingerprint(model) == first and len(hashed) == 1
    (model / "weights.bin").write_bytes(b"\1" * 1000)  # same size, new bytes, new mtime
    stat = (model / "weights.bin").stat()
    os.utime(model / "weights.bin", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = cache.dir_fingerprint(model)
    assert changed == real(model) != first and len(hashed) == 2


def test_an_unwritable_fingerprint_cache_only_costs_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from recfound.data.unified import data_fingerprint
    from recfound.index import fingerprint_cache as cache

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv(cache.CACHE_DIR_ENV, str(blocker / "cache"))
    model = tmp_path / "model"
    model.mkdir()
    (model / "w.bin").write_bytes(b"x")
    assert cache.dir_fingerprint(model) == data_fingerprint(model)
