"""Log the evaluated, merged model as an MLflow pyfunc model and register it as a new version.

Called by the `evaluate` stage run (mlflow_run.stage_run). The logged model carries
- artifacts: the base model dir, the merged adapter, the params.yaml it was trained with and
  the task set it was trained on (the merge stage's export index);
- code: a copy of the `recfound` package, so the version keeps working after the code moves on;
- requirements: the installed versions of the packages the inference path imports;
- metrics: the evaluation metrics (logged against the model, so the version shows them);
- tags: the lineage tags of the evaluate run (commit, data md5, pipeline id, flow-run id).
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

import recfound
from recfound.config import Config
from recfound.errors import RecFoundError
from recfound.tracking import pyfunc, pyfunc_model, tags

MODEL_NAME_IN_RUN = "model"
# Distributions the inference path (recfound.model.inference + pyfunc) imports at load time.
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
)
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
    """Columns task and input (strings), instruction optional."""
    return ModelSignature(
        inputs=Schema(
            [ColSpec("string", c) for c in pyfunc.INPUT_COLUMNS]
            + [ColSpec("string", c, required=False) for c in pyfunc.OPTIONAL_COLUMNS]
        )
    )


def model_artifacts(cfg: Config, params_path: str | Path) -> dict[str, str]:
    """The files the pyfunc model needs; a missing one is an error naming it.

    The task set (merged/tasks/tasks.json) joins them when the merge stage wrote it; without
    it the model serves all 13 tasks, as models merged before task subsets did.
    """
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
    task_set = merged / TASK_ADAPTERS_DIR / EXPORT_INDEX_FILE
    if task_set.is_file():
        artifacts[pyfunc.TASK_SET] = task_set
    return {name: str(path) for name, path in artifacts.items()}


def log_evaluated_model(cfg: Config, params_path: str | Path) -> ModelInfo:
    """Log the merged model into the active run as a pyfunc model (not yet registered)."""
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN,
        python_model=str(Path(pyfunc_model.__file__)),
        artifacts=model_artifacts(cfg, params_path),
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
