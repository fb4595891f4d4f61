"""One MLflow run per pipeline stage: params, lineage tags, metrics and artifacts.

`recfound stage <name>` (what dvc.yaml and the Prefect flow run) wraps the stage in
`stage_run(cfg, name)`. The run gets
- params: the params.yaml keys the stage declares in dvc.yaml, flattened (`train.lr`, ...);
- tags (names in recfound.tracking.tags): stage, git commit + dirty flag (set by uncommitted
  changes that can change a stage; the others are listed as ignored: recfound.tracking.lineage
  `tree_changes`), data.dvc md5, the
  hashes of its deps known at run time, the run ids of its upstream stages, the Prefect
  flow-run id when Prefect started it, and a pipeline id shared by the runs of one execution;
- after the stage succeeded: what its stage contract (recfound.stages) names: metrics files
  (per-step training metrics with `step=`, the evaluation metrics.json), artifacts (GX Data
  Docs, training curves, merged adapter, results.md, figures), and for the stage that
  `registers_model` (evaluate) the merged model as a registry version (registry.py).

Pipeline id: the Prefect flow sets RECFOUND_PIPELINE_ID to its flow-run id. A plain
`dvc repro` sets nothing, so the id is derived from what defines the inputs of that execution:
`local-<git commit[:12]>[-dirty]-<data md5[:12]>`. Re-running `dvc repro` on the same commit and
data therefore joins the same group, and upstream runs are matched to the latest one in it.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH

from recfound.config import Config
from recfound.errors import DataError, StageTerminated
from recfound.stages import contract
from recfound.tracking import git_dvc, lineage, registry, tags
from recfound.tracking.faults import inject_fault_once
from recfound.tracking.reconcile import close_dead_runs, process_identity

# MLflow accepts only these characters in metric and param names (mlflow.utils.validation).
_INVALID_NAME_CHARS = re.compile(r"[^/\w.\- :]")


def tracking_uri(cfg: Config) -> str:
    """MLFLOW_TRACKING_URI when the user set it (a team server), else params.yaml's tracking.uri."""
    return os.environ.get("MLFLOW_TRACKING_URI") or cfg.tracking.uri


def _point_mlflow_at(uri: str) -> None:
    """Make `uri` the tracking and registry store of this process, leaving the environment as is.

    mlflow.set_*_uri() also export MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, which would then
    read as a user's override in the next stage run of this process; the registry is set too,
    or a registry URI left from an earlier run in this process would receive model versions.
    """
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def _is_local_store(uri: str) -> bool:
    """True for a database or directory on this machine (no tracking server in between)."""
    return not uri.startswith(("http://", "https://", "databricks"))


def configure_mlflow(cfg: Config) -> str:
    """Point MLflow at the tracking store and return the experiment id (created when absent).

    With a local store, new experiments keep artifacts under tracking.artifact_root (resolved
    to an absolute path, so the UI and `mlflow models serve` find them from any directory);
    with a server, the server decides where artifacts go.
    """
    uri = tracking_uri(cfg)
    _point_mlflow_at(uri)
    experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(cfg.tracking.artifact_root).resolve().as_uri() if _is_local_store(uri) else None
    return mlflow.create_experiment(cfg.tracking.experiment, artifact_location=location)


def metric_name(key: str) -> str:
    """A key made acceptable to MLflow: characters it refuses (e.g. '@' in MRR@20) become '_'."""
    return _INVALID_NAME_CHARS.sub("_", key)


def flatten(tree: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mappings/lists -> {"a.b.0": leaf}; the leaves are kept as they are."""
    if isinstance(tree, Mapping):
        items = tree.items()
    elif isinstance(tree, list | tuple):
        items = enumerate(tree)
    else:
        return {prefix: tree} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in items:
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping | list | tuple) and value:
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def pipeline_id(commit: str | None, dirty: bool, data_md5: str | None) -> str:
    """The group of a plain `dvc repro`: RECFOUND_PIPELINE_ID, else commit + data md5."""
    from_env = os.environ.get(tags.PIPELINE_ID_ENV)
    if from_env:
        return from_env
    code = (commit or "nocommit")[:12] + ("-dirty" if dirty else "")
    return f"local-{code}-{(data_md5 or 'nodata')[:12]}"


def find_upstream_runs(
    client: MlflowClient, experiment_id: str, pipeline: str, stages: list[str]
) -> dict[str, tuple[str, str]]:
    """For each upstream stage: (run id, how matched).

    First choice: the latest finished run of that stage in the same pipeline execution.
    When DVC skipped the stage (outputs cached), no such run exists; then the latest finished
    run of the stage in the experiment is taken and marked MATCH_LATEST, so lineage can say
    the link rests on recency rather than on a shared execution. Stages never run are absent.
    """
    found: dict[str, tuple[str, str]] = {}
    for stage in stages:
        base = f"tags.`{tags.STAGE}` = '{stage}' and attributes.status = 'FINISHED'"
        for match, filter_string in (
            (tags.MATCH_PIPELINE, f"{base} and tags.`{tags.PIPELINE_ID}` = '{pipeline}'"),
            (tags.MATCH_LATEST, base),
        ):
            runs = client.search_runs(
                [experiment_id],
                filter_string,
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if runs:
                found[stage] = (runs[0].info.run_id, match)
                break
    return found


def lineage_tags(
    client: MlflowClient, experiment_id: str, stage: str, repo: str | Path = "."
) -> dict[str, str]:
    """All lineage tags of a stage run started now in `repo` (see module docstring)."""
    commit = git_dvc.git_commit(repo)
    changes = lineage.tree_changes(repo)  # only those that can change a stage count
    dirty = bool(changes.counted)
    data = git_dvc.data_md5(repo)
    pipeline = pipeline_id(commit, dirty, data)
    upstream = git_dvc.upstream_stages(repo, stage)
    values: dict[str, str | None] = {
        tags.STAGE: stage,
        tags.PIPELINE_ID: pipeline,
        tags.GIT_COMMIT: commit,
        tags.GIT_DIRTY: str(dirty).lower(),
        tags.GIT_CHANGED: lineage.paths_tag(changes.counted),
        tags.GIT_IGNORED: lineage.paths_tag(changes.ignored),
        tags.DATA_MD5: data,
        tags.FLOW_RUN_ID: os.environ.get(tags.FLOW_RUN_ID_ENV),
        tags.UPSTREAM_STAGES: ",".join(upstream),
    }
    for dep, md5 in git_dvc.stage_dep_hashes(repo, stage).items():
        values[f"{tags.DEP_PREFIX}{dep}"] = md5
    for up, (run_id, match) in find_upstream_runs(
        client, experiment_id, pipeline, upstream
    ).items():
        values[tags.upstream_tag(up)] = run_id
        values[tags.upstream_match_tag(up)] = match
    return {key: value for key, value in values.items() if value is not None}


def stage_params(
    stage: str, repo: str | Path = ".", params_file: str | Path = "params.yaml"
) -> dict[str, Any]:
    """The stage's declared params.yaml keys, flattened to MLflow param names and strings."""
    flat = flatten(git_dvc.stage_params(repo, stage, params_file))
    return {
        metric_name(key): json.dumps(value) if isinstance(value, list | dict) else value
        for key, value in flat.items()
    }


def read_step_metrics(path: Path) -> list[Metric]:
    """Per-step training metrics from steps.jsonl as MLflow Metrics (step = the line's `step`).

    Each line is a JSON object with an integer `step` and numeric values (loss, loss_emb,
    loss_gen, lr, loss/<CODE>, ratio/<CODE>); non-numeric values are skipped.
    """
    now = int(time.time() * 1000)
    metrics: list[Metric] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(path, f"not JSON: {err.msg}", line=number) from err
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise DataError(path, "expected an object with an integer 'step'", line=number)
        step = record["step"]
        metrics.extend(
            Metric(metric_name(key), float(value), now, step)
            for key, value in record.items()
            if key != "step" and _is_number(value)
        )
    return metrics


def read_metrics_json(path: Path) -> dict[str, float]:
    """Evaluation metrics.json flattened to `a/b/c` names, numeric leaves only."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(path, f"not JSON: {err.msg}", line=err.lineno) from err
    flat = flatten(doc, sep="/")
    return {metric_name(k): float(v) for k, v in flat.items() if _is_number(v)}


def _log_batches(client: MlflowClient, run_id: str, metrics: list[Metric]) -> None:
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])


def _log_params(params: dict[str, Any]) -> None:
    items = list(params.items())
    for start in range(0, len(items), MAX_PARAMS_TAGS_PER_BATCH):
        mlflow.log_params(dict(items[start : start + MAX_PARAMS_TAGS_PER_BATCH]))


def stage_artifacts(cfg: Config, stage: str) -> list[tuple[Path, str]]:
    """(local path, artifact dir) pairs a finished stage leaves in MLflow; absent paths skipped.

    Which outputs, and where they go, is the stage contract's `artifacts` (recfound.stages).
    """
    return [
        (path, artifact.dest)
        for artifact in contract(stage).artifacts
        for path in artifact.local_paths(cfg)
        if path.exists()
    ]


def log_stage_outputs(
    client: MlflowClient, run_id: str, cfg: Config, stage: str, model_id: str | None = None
) -> None:
    """Metrics and artifacts of a finished stage, as its contract's `logged_metrics` and
    `artifacts` name them (see stage_artifacts / read_* above); absent files are skipped.

    Whole-document metrics are logged against `model_id` too when a model was logged, so the
    registered version shows them.
    """
    for logged in contract(stage).logged_metrics:
        path = logged.path(cfg)
        if not path.is_file():
            continue
        if logged.form == "steps":
            _log_batches(client, run_id, read_step_metrics(path))
        else:
            mlflow.log_metrics(read_metrics_json(path), model_id=model_id)
    for path, dest in stage_artifacts(cfg, stage):
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=dest or None)
        else:
            mlflow.log_artifact(str(path), artifact_path=dest or None)


def _is_main_process() -> bool:
    """Only rank 0 of a multi-process launch (torchrun / accelerate launch) records the run."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def stage_run(
    cfg: Config, stage_name: str, params_path: str | Path = "params.yaml", repo: str | Path = "."
) -> Iterator[mlflow.ActiveRun | None]:
    """Run the body of stage `stage_name` inside an MLflow run.

    The run ends FAILED if the body raises, KILLED if the stage was told to stop
    (StageTerminated, KeyboardInterrupt). It is tagged with its process (host, pid, start), so
    that a run whose process was killed outright can be closed later: each stage run first
    closes such runs (recfound.tracking.reconcile).
    With tracking.enabled false the body runs untracked and None is yielded.
    After a stage whose contract `registers_model` (evaluate), the merged model is registered
    as a version of tracking.registered_model when tracking.register_model is true.
    """
    if not cfg.tracking.enabled or not _is_main_process():
        yield None
        return
    experiment_id = configure_mlflow(cfg)
    client = MlflowClient()
    closed = close_dead_runs(client, experiment_id)
    if closed:
        print(f"MLflow runs left RUNNING by dead processes, now KILLED: {', '.join(closed)}")
    run_tags = lineage_tags(client, experiment_id, stage_name, repo) | process_identity()
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage_name, tags=run_tags) as run:
        try:
            _log_params(stage_params(stage_name, repo, params_path))
            inject_fault_once(stage_name)
            yield run
            model = None
            if contract(stage_name).registers_model and cfg.tracking.register_model:
                model = registry.log_evaluated_model(cfg, params_path)
            log_stage_outputs(
                client, run.info.run_id, cfg, stage_name, model.model_id if model else None
            )
            if model is not None:
                registry.register_model_version(cfg, model, run_tags)
        except (StageTerminated, KeyboardInterrupt):
            # told to stop, not failed: start_run's exit records any exception as FAILED
            mlflow.end_run(RunStatus.to_string(RunStatus.KILLED))
            raise
        print(f"MLflow run {run.info.run_id} ({stage_name}) in {tracking_uri(cfg)}")
