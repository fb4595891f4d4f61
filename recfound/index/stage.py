"""DVC stage `index`: the whole catalogue embedded by the merged model, one index per task.

TMoLE routes a passage through its task's experts, so an item's U2I, Q2I and I2I vectors
differ and each embedding task searches its own. The tasks indexed are the embedding tasks the
model was trained on (`present_tasks`, as the merge stage takes them); a build without any
writes an empty index (`index.json` lists no task) rather than failing the pipeline.

Every task indexes the WHOLE catalogue, Q2I included. Q2I's training positives are ESCI
products only, so its scores on other items (reviewed products, movies) are the model's
extrapolation; but a shopper's query may match any item, and one rule keeps every index the
size of the catalogue and its ids the catalogue's (docs/recommend.md).

Writes `paths.index/` whole, atomically:

    <TASK>/       a CatalogueIndex (recfound.index.store): index.faiss, vectors.npy, ids.json,
                  manifest.json
    index.json    the tasks indexed and each one's manifest: what the stage's MLflow run keeps

Each manifest carries the fingerprints of what the index was built from (`fingerprints`):
`model` (the base model and merged adapter directories, file by file; remembered by the files'
path, size and mtime, recfound.index.fingerprint_cache, so a check reads no model byte while
they are unchanged), `catalogue` (its item ids and passages) and `task`.

The catalogue is embedded through the model's `Predictor` (recfound.model.predictor), as
evaluation embeds pool passages and as `recommend` and the served model embed queries:
passages cut to `train.max_len_passage` tokens, vectors normalised in float32.

`load_task_index` refuses an index whose fingerprints differ from those of the files on disk
now, in one line that says to run `dvc repro index`: a stale index would answer with another
model's or another catalogue's vectors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from recfound.atomic import atomic_dir
from recfound.config import Config, IndexConfig
from recfound.data.catalogue import catalogue_fingerprint, read_catalogue
from recfound.data.unified import load_unified, present_tasks
from recfound.errors import DataError, RecFoundError
from recfound.index.embed import embed_catalogue
from recfound.index.fingerprint_cache import dir_fingerprint
from recfound.index.store import MANIFEST_FILE, CatalogueIndex
from recfound.merge.layout import merged_adapter_dir
from recfound.outputs import INDEX_SUMMARY_FILE as SUMMARY_FILE
from recfound.tasks import Task

# merged_adapter_dir: re-exported, where the index's readers have always found it
__all__ = ["IndexNotCurrent", "fingerprints", "load_task_index", "merged_adapter_dir", "run"]

REBUILD_HINT = "run `dvc repro index`"


class IndexNotCurrent(RecFoundError):
    """A task's index is missing, unreadable, or built from another model or catalogue."""


def model_fingerprint(base_model_dir: str | Path, adapter_dir: str | Path) -> str:
    """A content hash of a model: every file of its base model directory and of its adapter
    directory, relative path and bytes. Copies of the two directories hash alike. Each
    directory's hash is remembered by its files' (path, size, mtime): `dir_fingerprint`."""
    digest = hashlib.blake2b(digest_size=16)
    for directory in (Path(base_model_dir), Path(adapter_dir)):
        if not directory.is_dir():
            raise IndexNotCurrent(f"{directory}: no model here to check the index against")
        digest.update(dir_fingerprint(directory).encode() + b"\0")
    return digest.hexdigest()


def fingerprints(
    base_model_dir: str | Path, adapter_dir: str | Path, catalogue: pa.Table
) -> dict[str, str]:
    """The `model` and `catalogue` fingerprints of an index built from these inputs (each
    task's manifest adds `task`)."""
    return {
        "model": model_fingerprint(base_model_dir, adapter_dir),
        "catalogue": catalogue_fingerprint(catalogue),
    }


def indexed_tasks(index_dir: str | Path) -> tuple[str, ...]:
    """The task codes the index at `index_dir` holds (its index.json)."""
    path = Path(index_dir) / SUMMARY_FILE
    if not path.is_file():
        raise IndexNotCurrent(f"{path}: no catalogue index; {REBUILD_HINT}")
    return tuple(json.loads(path.read_text(encoding="utf-8"))["tasks"])


def load_task_index(
    index_dir: str | Path, code: str, cfg: IndexConfig, expect: Mapping[str, str]
) -> CatalogueIndex:
    """The index of embedding task `code` under `index_dir`, checked against `expect` (the
    `fingerprints` of the model and catalogue it must have been built from).

    IndexNotCurrent, one line: the index holds no such task (the build had no training rows
    of it), or it is missing, unreadable or stale (`dvc repro index` rebuilds it).
    """
    tasks = indexed_tasks(index_dir)
    if code not in tasks:
        held = ", ".join(tasks) or "no task"
        raise IndexNotCurrent(
            f"{index_dir}: no {code} index: it holds {held}, the embedding tasks with "
            "training rows in the build"
        )
    directory = Path(index_dir) / code
    try:
        return CatalogueIndex.load(directory, cfg, expect={**expect, "task": code})
    except (DataError, OSError, KeyError, ValueError) as err:
        raise IndexNotCurrent(f"{err}; {REBUILD_HINT}") from err


def write_indexes(
    cfg: Config, tasks: Sequence[Task], catalogue: pa.Table, out_dir: Path
) -> dict[str, dict[str, Any]]:
    """Embed the catalogue with the merged model for each task, index it, save it under
    `out_dir/<TASK>/`; returns each task's manifest."""
    from recfound.model.predictor import Predictor

    adapter_dir = merged_adapter_dir(cfg)
    built_from = fingerprints(cfg.paths.base_model, adapter_dir, catalogue)
    ids, passages = catalogue["item_id"].to_pylist(), catalogue["passage"].to_pylist()
    predictor = Predictor.load(cfg, cfg.paths.base_model, adapter_dir)
    manifests = {}
    for task in tasks:
        print(f"index: {task.code}: embedding {len(ids)} catalogue items")
        embed = predictor.embedder(task, cfg.index.batch_size, progress=True)
        vectors = embed_catalogue(passages, embed, cfg.index.chunk_items)
        index = CatalogueIndex.build(vectors, ids, cfg.index, {**built_from, "task": task.code})
        index.save(out_dir / task.code)
        manifests[task.code] = index.manifest()
    return manifests


def run(cfg: Config) -> None:
    """Index the catalogue for every embedding task the model learnt (none: an empty index)."""
    catalogue = read_catalogue(cfg.paths.unified)
    trained = present_tasks(load_unified(cfg.paths.unified, ("train",)))
    tasks = [task for task in trained if task.is_embedding]
    if not tasks:
        print("index: the build has no embedding task (U2I, Q2I, I2I): nothing to index")
    with atomic_dir(cfg.paths.index) as tmp:
        manifests = write_indexes(cfg, tasks, catalogue, tmp) if tasks else {}
        summary = {"tasks": list(manifests), "manifests": manifests}
        (tmp / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    for code, manifest in manifests.items():
        print(
            f"index: {cfg.paths.index / code}/ ({manifest['kind']}, {manifest['items']} items, "
            f"dim {manifest['dim']}; {MANIFEST_FILE} holds its fingerprints)"
        )
