"""Log the evaluated, merged model as an MLflow pyfunc model and register it as a new version.

Called by the `evaluate` stage run (mlflow_run.stage_run). The logged model carries
- artifacts: the base model dir, the merged adapter, the params.yaml it was trained with,
  the task set it was trained on (the merge stage's export index) and, when the index stage
  wrote them, the catalogue indexes (paths.index) and the catalogue they index (retrieval);
- code: a copy of the `recfound` package, so the version keeps working after the code moves on;
- requirements: the installed versions of the packages the inference path imports;
- metrics: the evaluation metrics (logged against the model, so the version shows them);
- tags: the lineage tags of the evaluate run (commit, data md5, pipeline id, flow-run id).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema
from mlflow.types.schema import AnyType

import recfound
from recfound.config import Config
from recfound.errors import RecFoundError
from recfound.tracking import pyfunc, pyfunc_model, tags

MODEL_NAME_IN_RUN = "model"
# Distributions the inference path (recfound.model.inference + pyfunc, and for retrieval
# recfound.index.recommend: faiss, the catalogue's pyarrow, datasets via index.stage) imports.
INFERENCE_DISTRIBUTIONS = (
    "torch",
    "transformers",
    "tokenizers",
    "peft",
    "accelerate",
    "safetensors",
    "numpy",
    "pandas",
    "pydantic",
    "pyyaml",
    "tqdm",
    "faiss-cpu",
    "pyarrow",
    "datasets",
)
# MLflow's warning that log_model got no input_example (it starts with an ANSI colour code).
NO_INPUT_EXAMPLE_WARNING = r".*An input example was not provided"
# Lineage tags copied from the run onto the model version (the run keeps the full set).
VERSION_TAGS = (tags.PIPELINE_ID, tags.FLOW_RUN_ID, tags.GIT_COMMIT, tags.GIT_DIRTY, tags.DATA_MD5)


def inference_requirements() -> list[str]:
    """`name==version` for each installed inference distribution (absent ones are skipped)."""
    pins = []
    for name in INFERENCE_DISTRIBUTIONS:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pins


def input_signature() -> ModelSignature:
    """Columns task and input (strings), instruction (string) and k (checked by the model)
    optional."""
    return ModelSignature(
        inputs=Schema(
            [ColSpec("string", c) for c in pyfunc.INPUT_COLUMNS]
            + [ColSpec("string", c, required=False) for c in pyfunc.OPTIONAL_COLUMNS]
            + [ColSpec(AnyType(), pyfunc.K_COLUMN, required=False)]
        )
    )


def model_artifacts(cfg: Config, params_path: str | Path) -> dict[str, str]:
    """The files the pyfunc model needs; a missing one is an error naming it.

    The task set (merged/tasks/tasks.json) joins them when the merge stage wrote it; without
    it the model serves all 13 tasks, as models merged before task subsets did. The index
    (paths.index) and the build's catalogue join them when the index stage wrote the index;
    without it the model answers all but retrieval.
    """
    from recfound.data.catalogue import CATALOGUE_FILE
    from recfound.data.unified import BUILD_MANIFEST
    from recfound.index.stage import SUMMARY_FILE
    from recfound.merge.layout import MERGED_ADAPTER_DIR, TASK_ADAPTERS_DIR
    from recfound.model.export import EXPORT_INDEX_FILE

    merged = Path(cfg.paths.merged)
    artifacts = {
        pyfunc.BASE_MODEL: Path(cfg.paths.base_model),
        pyfunc.ADAPTER: merged / MERGED_ADAPTER_DIR,
        pyfunc.PARAMS: Path(params_path),
    }
    for name, path in artifacts.items():
        if not path.exists():
            raise RecFoundError(f"{path}: needed to register the model ({name}) but absent")
    build = Path(cfg.paths.unified) / BUILD_MANIFEST  # each task's trained instruction
    if build.is_file():
        artifacts[pyfunc.BUILD] = build
    task_set = merged / TASK_ADAPTERS_DIR / EXPORT_INDEX_FILE
    if task_set.is_file():
        artifacts[pyfunc.TASK_SET] = task_set
    if (Path(cfg.paths.index) / SUMMARY_FILE).is_file():
        catalogue = Path(cfg.paths.unified) / CATALOGUE_FILE
        if not catalogue.is_file():
            raise RecFoundError(f"{catalogue}: the index's catalogue, needed with it, is absent")
        artifacts[pyfunc.INDEX] = Path(cfg.paths.index)
        artifacts[pyfunc.CATALOGUE] = catalogue
    return {name: str(path) for name, path in artifacts.items()}


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def index_without_vectors(index_dir: Path, out_dir: Path) -> Path:
    """`index_dir` at `out_dir` (hard links) less each task's vectors.npy: searching needs only
    the faiss index, which holds the vectors already; at 1M items of 576 floats the copies
    would add 2.3 GB per task to every registered version."""
    from recfound.index.store import VECTORS_FILE

    for source in index_dir.rglob("*"):
        target = out_dir / source.relative_to(index_dir)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif source.name != VECTORS_FILE:
            target.parent.mkdir(parents=True, exist_ok=True)
            link_or_copy(source, target)
    return out_dir


def log_evaluated_model(cfg: Config, params_path: str | Path) -> ModelInfo:
    """Log the merged model into the active run as a pyfunc model (not yet registered)."""
    artifacts = model_artifacts(cfg, params_path)
    with contextlib.ExitStack() as stack:
        if pyfunc.INDEX in artifacts:
            index_dir = Path(cfg.paths.index)
            # beside the index: hard links need the same file system
            tmp = tempfile.TemporaryDirectory(dir=index_dir.parent, prefix=".logged-index-")
            logged = index_without_vectors(index_dir, Path(stack.enter_context(tmp)) / "index")
            artifacts[pyfunc.INDEX] = str(logged)
        # Without input_example MLflow warns, in raw ANSI colours whatever the output; with one
        # it would load and run the whole model inside log_model (the signature checks inputs).
        stack.enter_context(warnings.catch_warnings())
        warnings.filterwarnings("ignore", NO_INPUT_EXAMPLE_WARNING, UserWarning)
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(Path(pyfunc_model.__file__)),
            artifacts=artifacts,
            code_paths=[str(Path(recfound.__file__).parent)],
            pip_requirements=inference_requirements(),
            signature=input_signature(),
        )


def register_model_version(cfg: Config, model: ModelInfo, run_tags: dict[str, str]) -> ModelVersion:
    """Register the logged model as the next version of tracking.registered_model."""
    version_tags = {key: run_tags[key] for key in VERSION_TAGS if key in run_tags}
    registered = mlflow.register_model(
        model.model_uri, cfg.tracking.registered_model, tags=version_tags
    )
    print(f"registered model version {registered.name}/{registered.version}")
    return registered
