"""Names of the MLflow tags that carry lineage, and of the environment variables that feed them.

One place, because three parties must agree on them: the stage run that writes the tags
(mlflow_run), the registry step that copies them onto model versions (registry) and
`recfound lineage`, which reads them back.
"""

from __future__ import annotations

# Set by the Prefect flow for every stage it runs; absent under a plain `dvc repro`.
PIPELINE_ID_ENV = "RECFOUND_PIPELINE_ID"
FLOW_RUN_ID_ENV = "RECFOUND_PREFECT_FLOW_RUN_ID"

STAGE = "recfound.stage"
PIPELINE_ID = "recfound.pipeline_id"
FLOW_RUN_ID = "recfound.prefect.flow_run_id"
GIT_COMMIT = "recfound.git.commit"
GIT_DIRTY = "recfound.git.dirty"  # "true" when uncommitted changes could change a stage
GIT_CHANGED = "recfound.git.changed"  # those changes' paths (recfound.tracking.lineage)
GIT_IGNORED = "recfound.git.ignored"  # uncommitted paths no stage reads, left out of the flag
DATA_MD5 = "recfound.data.md5"  # md5 recorded in data.dvc when the stage ran
DEP_PREFIX = "recfound.dep."  # recfound.dep.<path> = md5 of that dependency
UPSTREAM_STAGES = "recfound.upstream_stages"  # comma-separated parents in dvc.yaml
UPSTREAM_PREFIX = "recfound.upstream."  # recfound.upstream.<stage> = run id
UPSTREAM_MATCH_SUFFIX = ".match"  # recfound.upstream.<stage>.match = pipeline | latest
# The process that runs the stage: a run left RUNNING whose process is gone on its host is
# closed as KILLED by the next start (recfound.tracking.reconcile).
PROCESS_HOST = "recfound.process.host"
PROCESS_PID = "recfound.process.pid"
PROCESS_START = "recfound.process.start"  # the process's start time (guards against pid reuse)

# How an upstream run was found: in the same pipeline execution, or (DVC skipped the stage
# because its outputs were cached) the most recent finished run of that stage.
MATCH_PIPELINE = "pipeline"
MATCH_LATEST = "latest"


def upstream_tag(stage: str) -> str:
    """Tag holding the run id of upstream `stage`."""
    return f"{UPSTREAM_PREFIX}{stage}"


def upstream_match_tag(stage: str) -> str:
    """Tag saying how the upstream run of `stage` was matched (MATCH_PIPELINE / MATCH_LATEST)."""
    return f"{UPSTREAM_PREFIX}{stage}{UPSTREAM_MATCH_SUFFIX}"
