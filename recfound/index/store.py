"""The faiss index over a catalogue's unit vectors: build, save/load, search with exclusions.

Vectors are unit-norm, so the inner product is the cosine similarity the evaluation scores
pools with. Up to `index.exact_max_items` items the index is exact (`IndexFlatIP`, a scan of
every vector); above it, HNSW over the same inner product (`IndexHNSWFlat`), whose recall
and speed `index.hnsw_*` set. HNSW was chosen over IVF by measurement on 20k synthetic
576-d vectors of a low-dimensional latent structure (bench/index.py, tests/test_index.py):
HNSW (M 32, efSearch 256) reached recall@10 ≥ 0.999 against exact search, while IVF
(4·√n lists) needed most of its lists probed to pass 0.85, i.e. no faster than a scan.

Search excludes per-query item sets (a user's seen items, an I2I query item) by asking the
index for more than k, ceil(k · `index.overfetch`), dropping the excluded ids and asking for
twice as many while a query still has fewer than k: it returns exactly k ids whenever the
catalogue has k items outside the exclusions.

On disk (`save`, atomic): `index.faiss` (faiss.write_index), `vectors.npy` (float32, row i
the vector of item i), `ids.json` (the item ids, row order) and `manifest.json` (kind, size,
dimension, knobs, and the fingerprints of what it was built from: model, catalogue, task).
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from recfound.atomic import atomic_dir
from recfound.config import IndexConfig
from recfound.errors import DataError

INDEX_FILE = "index.faiss"
VECTORS_FILE = "vectors.npy"
IDS_FILE = "ids.json"
MANIFEST_FILE = "manifest.json"
IndexKind = Literal["exact", "hnsw"]
# A vector counts as unit-norm within this distance of 1 (float32 rounding; bf16 models).
UNIT_NORM_TOLERANCE = 1e-3


@dataclass(frozen=True)
class SearchResult:
    """Per query: item ids best first and their cosine scores (at most k of each)."""

    ids: list[list[str]]
    scores: list[np.ndarray]


def unit_rows(vectors: np.ndarray, what: str) -> np.ndarray:
    """`vectors` as contiguous float32 rows; ValueError unless 2-D with unit-norm rows (inner
    product is cosine only on unit vectors)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array, got shape {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1)
    if len(norms) and not np.allclose(norms, 1.0, atol=UNIT_NORM_TOLERANCE):
        raise ValueError(f"{what} are not unit-norm (norms {norms.min():.4f}..{norms.max():.4f})")
    return vectors


def index_kind(n_items: int, cfg: IndexConfig) -> IndexKind:
    """Exact search up to `cfg.exact_max_items` items, HNSW above."""
    return "exact" if n_items <= cfg.exact_max_items else "hnsw"


def _faiss_index(vectors: np.ndarray, kind: IndexKind, cfg: IndexConfig) -> faiss.Index:
    dim = vectors.shape[1]
    if kind == "exact":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = cfg.hnsw_ef_construction
        index.hnsw.efSearch = cfg.hnsw_ef_search
    index.add(vectors)
    return index


@dataclass
class CatalogueIndex:
    """A faiss index over catalogue vectors, with the item id of each row."""

    index: faiss.Index
    ids: list[str]
    kind: IndexKind
    cfg: IndexConfig
    fingerprints: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        vectors: np.ndarray,
        ids: Sequence[str],
        cfg: IndexConfig,
        fingerprints: Mapping[str, str] | None = None,
        kind: IndexKind | None = None,
    ) -> CatalogueIndex:
        """Index `vectors` (row i = item ids[i]); the kind from the size unless given."""
        vectors = unit_rows(vectors, "vectors")
        if len(vectors) != len(ids) or not len(ids):
            raise ValueError(f"{len(vectors)} vectors for {len(ids)} ids (need ≥ 1, equal)")
        if len(set(ids)) != len(ids):
            raise ValueError("item ids repeat")
        kind = kind or index_kind(len(ids), cfg)
        return cls(_faiss_index(vectors, kind, cfg), list(ids), kind, cfg, dict(fingerprints or {}))

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return self.index.d

    def vectors(self) -> np.ndarray:
        """Every item's vector, row order (both index kinds store them whole)."""
        return self.index.reconstruct_n(0, len(self))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[Collection[str]] | None = None,
    ) -> SearchResult:
        """The k items nearest each query (cosine), skipping `exclude[i]` for query i."""
        queries = unit_rows(queries, "queries")
        if queries.shape[1] != self.dim:
            raise ValueError(f"queries have dimension {queries.shape[1]}, the index {self.dim}")
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        exclude = exclude if exclude is not None else [()] * len(queries)
        if len(exclude) != len(queries):
            raise ValueError(f"{len(exclude)} exclusion sets for {len(queries)} queries")
        ids: list[list[str]] = [[] for _ in queries]
        scores: list[np.ndarray] = [np.empty(0, np.float32) for _ in queries]
        pending = list(range(len(queries)))
        fetch = min(len(self), math.ceil(k * self.cfg.overfetch))
        while pending:
            found_scores, found_rows = self.index.search(queries[pending], fetch)
            unfinished = []
            for query, row_scores, rows in zip(pending, found_scores, found_rows, strict=True):
                kept = [
                    (self.ids[r], s)
                    for r, s in zip(rows.tolist(), row_scores.tolist(), strict=True)
                    if r >= 0 and self.ids[r] not in exclude[query]
                ][:k]
                ids[query] = [item for item, _ in kept]
                scores[query] = np.array([s for _, s in kept], dtype=np.float32)
                # Fewer than k kept: the fetch was crowded out; ask again wider unless it had all.
                if len(kept) < k and fetch < len(self):
                    unfinished.append(query)
            pending = unfinished
            fetch = min(len(self), 2 * fetch)
        return SearchResult(ids, scores)

    def manifest(self) -> dict[str, Any]:
        knobs = self.cfg.model_dump(include={"hnsw_m", "hnsw_ef_construction", "hnsw_ef_search"})
        return {
            "kind": self.kind,
            "items": len(self),
            "dim": self.dim,
            "metric": "inner_product",
            "knobs": knobs if self.kind == "hnsw" else {},
            "fingerprints": self.fingerprints,
        }

    def save(self, directory: str | Path) -> None:
        """Write the index, vectors, ids and manifest to `directory`, replacing it whole."""
        with atomic_dir(directory) as tmp:
            faiss.write_index(self.index, str(tmp / INDEX_FILE))
            np.save(tmp / VECTORS_FILE, self.vectors())
            (tmp / IDS_FILE).write_text(json.dumps(self.ids, ensure_ascii=False), "utf-8")
            (tmp / MANIFEST_FILE).write_text(json.dumps(self.manifest(), indent=2) + "\n")

    @classmethod
    def load(
        cls,
        directory: str | Path,
        cfg: IndexConfig,
        expect: Mapping[str, str] | None = None,
    ) -> CatalogueIndex:
        """The index saved at `directory`; DataError when a fingerprint in `expect` differs
        (built from another model or catalogue). Search knobs (efSearch, overfetch) come
        from `cfg`, so they can change without a rebuild."""
        directory = Path(directory)
        if not (directory / MANIFEST_FILE).is_file():
            raise DataError(directory, "no catalogue index here (no manifest.json)")
        manifest = json.loads((directory / MANIFEST_FILE).read_text())
        stale = {
            key: (manifest["fingerprints"].get(key), value)
            for key, value in (expect or {}).items()
            if manifest["fingerprints"].get(key) != value
        }
        if stale:
            raise DataError(directory, f"index built from other inputs (saved, wanted): {stale}")
        index = faiss.read_index(str(directory / INDEX_FILE))
        if manifest["kind"] == "hnsw":
            index.hnsw.efSearch = cfg.hnsw_ef_search
        ids = json.loads((directory / IDS_FILE).read_text("utf-8"))
        if len(ids) != index.ntotal:
            raise DataError(directory, f"{len(ids)} ids for {index.ntotal} indexed vectors")
        return cls(index, ids, manifest["kind"], cfg, manifest["fingerprints"])


def load_vectors(directory: str | Path) -> np.ndarray:
    """The saved catalogue vectors, memory-mapped (row i = ids.json[i])."""
    return np.load(Path(directory) / VECTORS_FILE, mmap_mode="r")
