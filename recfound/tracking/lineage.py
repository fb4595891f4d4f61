"""`recfound lineage <model>/<version>`: model version -> runs -> data hash -> git commit -> params.

Starting at the registered version's source run (the `evaluate` stage run), it follows the
`recfound.upstream.<stage>` tags back to the first stage, and for every run checks what the
tags claim against what can be verified. Anything that cannot be traced is reported as a
problem, printed as `UNTRACED: ...`:
- the version has no source run, or a run was deleted;
- a lineage tag is missing (stage, pipeline id, git commit, data md5);
- an upstream stage named in dvc.yaml has no recorded run;
- an upstream run was matched by recency (DVC skipped it in that execution) and no run of its
  own execution consumed the same output hash the downstream run consumed;
- the git commit is unknown to this repository, or the tree had uncommitted changes that can
  change a stage (`tree_changes`);
- the data md5 differs from data.dvc at that commit (or data.dvc was not committed there).

Only an uncommitted change that can change what a stage computes makes a run's code differ
from its commit: a file under some stage's deps in dvc.yaml, params.yaml, dvc.yaml or a `.dvc`
file (`can_change_a_stage`). Anything else (a `make repro > repro.log`, a notes file, an edit
under tests/ or docs/) is recorded as ignored, and listed, but leaves the run traced. What
`dvc repro` writes itself (dvc.lock, stage outputs, the stage lock) is not a change at all
(`git_dvc.source_dirty_paths`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recfound.errors import RecFoundError
from recfound.stages import PARAMS_YAML, StageSpec, read_stages
from recfound.tracking import git_dvc, tags

UNTRACED = "UNTRACED"
_REQUIRED_TAGS = {
    tags.STAGE: "stage name",
    tags.PIPELINE_ID: "pipeline id",
    tags.GIT_COMMIT: "git commit",
    tags.DATA_MD5: "data md5",
}


# Files that change what a stage computes without being under its deps: the pipeline's
# definition, its params, and (by suffix) the .dvc files that pin the data.
PIPELINE_FILES = ("dvc.yaml", PARAMS_YAML)
DVC_FILE_SUFFIX = ".dvc"
# Paths a change tag lists at most (an MLflow tag value holds 8,000 characters at most).
TAG_PATHS_MAX = 20


@dataclass(frozen=True)
class TreeChanges:
    """A working tree's uncommitted changes, split by whether they can change a stage."""

    counted: list[str]  # can change a stage: the run's code may differ from its commit
    ignored: list[str]  # can change none (not under a dep, not params/dvc.yaml/.dvc)


def can_change_a_stage(path: str, stages: dict[str, StageSpec]) -> bool:
    """Whether a change to `path` can change what some stage computes (module docstring)."""
    if path in PIPELINE_FILES or path.endswith(DVC_FILE_SUFFIX):
        return True
    return any(git_dvc._overlaps(path, dep) for spec in stages.values() for dep in spec.deps)


def tree_changes(repo: str | Path = ".") -> TreeChanges:
    """The uncommitted changes in `repo` other than `dvc repro`'s own writes, counted or
    ignored (`can_change_a_stage`, the stages as `repo`'s dvc.yaml declares them)."""
    stages = read_stages(repo)
    changed = git_dvc.source_dirty_paths(repo)
    counted = [path for path in changed if can_change_a_stage(path, stages)]
    return TreeChanges(counted, [path for path in changed if path not in counted])


def paths_tag(paths: list[str]) -> str | None:
    """Paths as one tag value: comma-separated, the first `TAG_PATHS_MAX` and a count of the
    rest; None for none."""
    if not paths:
        return None
    rest = len(paths) - TAG_PATHS_MAX
    return ",".join(paths[:TAG_PATHS_MAX]) + (f",... ({rest} more)" if rest > 0 else "")


@dataclass
class RunNode:
    """One stage run in the lineage and what could not be verified about it."""

    run_id: str
    stage: str = "?"
    experiment_id: str = ""
    status: str = "?"
    match: str | None = None  # how this run was linked from its downstream run
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    upstream: list[RunNode] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seen_before: bool = False  # already printed higher up the tree (a DAG, not a tree)


@dataclass
class Lineage:
    """A registered model version and the runs that made it."""

    model: str
    version: str
    source_run: RunNode | None = None
    problems: list[str] = field(default_factory=list)

    def all_problems(self) -> list[str]:
        """Every problem, version-level first, then run by run (each run once)."""
        found = list(self.problems)
        stack = [self.source_run] if self.source_run else []
        while stack:
            node = stack.pop()
            if node.seen_before:
                continue
            found.extend(f"{node.stage} run {node.run_id}: {p}" for p in node.problems)
            stack.extend(reversed(node.upstream))
        return found


def parse_model_ref(ref: str) -> tuple[str, str]:
    """`name/version` or `models:/name/version` -> (name, version)."""
    body = ref.removeprefix("models:/")
    name, _, version = body.rpartition("/")
    if not name or not version.isdigit():
        raise RecFoundError(f"{ref!r}: expected <model-name>/<version>, e.g. recfound/3")
    return name, version


def _get_run(client: MlflowClient, run_id: str) -> Run | None:
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def _check_code_and_data(node: RunNode, repo: Path) -> None:
    """Is the git commit known here, was the tree clean, does data md5 match the raw data's
    .dvc file there (`<paths.data>.dvc` as that commit's params.yaml sets it)?"""
    commit = node.tags.get(tags.GIT_COMMIT)
    data = node.tags.get(tags.DATA_MD5)
    if node.tags.get(tags.GIT_DIRTY) == "true":
        changed = node.tags.get(tags.GIT_CHANGED)
        which = f", to what a stage reads ({changed})" if changed else ""
        node.problems.append(
            f"uncommitted changes when it ran{which}: the code may differ from the commit"
        )
    if not commit:
        return
    if not git_dvc.commit_exists(repo, commit):
        node.problems.append(f"git commit {commit} is not in the repository at {repo}")
        return
    dvc_file = git_dvc.data_dvc_file_at(repo, commit)  # <paths.data>.dvc as it was there
    committed = git_dvc.data_md5_at(repo, commit, dvc_file)
    if committed is None:
        node.problems.append(f"{dvc_file} is not committed at {commit[:12]}")
    elif data and committed != data:
        node.problems.append(
            f"data md5 {data} does not match {dvc_file} at {commit[:12]} ({committed})"
        )


def _verified_by_output_hash(client: MlflowClient, node: RunNode, parent: RunNode) -> bool:
    """Did a run of `node`'s own execution consume the same dependency bytes `parent` did?

    A recency match says "the latest run of that stage"; it is proven when a direct child of
    `node` in `node`'s pipeline recorded, for some dependency path, the md5 `parent` recorded.
    """
    parent_deps = {k: v for k, v in parent.tags.items() if k.startswith(tags.DEP_PREFIX)}
    pipeline = node.tags.get(tags.PIPELINE_ID)
    if not parent_deps or not pipeline:
        return False
    children = client.search_runs(
        [node.experiment_id],
        f"tags.`{tags.upstream_tag(node.stage)}` = '{node.run_id}' "
        f"and tags.`{tags.PIPELINE_ID}` = '{pipeline}'",
    )
    return any(
        child.data.tags.get(key) == md5 for child in children for key, md5 in parent_deps.items()
    )


def _trace_run(
    client: MlflowClient, run_id: str, repo: Path, seen: dict[str, RunNode], match: str | None
) -> RunNode:
    if run_id in seen:
        return RunNode(run_id, seen[run_id].stage, seen[run_id].status, match, seen_before=True)
    node = RunNode(run_id, match=match)
    seen[run_id] = node
    run = _get_run(client, run_id)
    if run is None:
        node.problems.append("run not found (deleted from the tracking store)")
        return node
    node.status = run.info.status
    node.experiment_id = run.info.experiment_id
    node.tags = dict(run.data.tags)
    node.params = dict(run.data.params)
    node.stage = node.tags.get(tags.STAGE, "?")
    if run.info.lifecycle_stage == "deleted":
        node.problems.append("run is deleted (in the trash)")
    node.problems.extend(
        f"missing tag {key} ({what})"
        for key, what in _REQUIRED_TAGS.items()
        if key not in node.tags
    )
    _check_code_and_data(node, repo)
    expected = [s for s in node.tags.get(tags.UPSTREAM_STAGES, "").split(",") if s]
    for stage in expected:
        up_id = node.tags.get(tags.upstream_tag(stage))
        if not up_id:
            node.problems.append(f"no run recorded for upstream stage {stage}")
            continue
        up_match = node.tags.get(tags.upstream_match_tag(stage))
        node.upstream.append(_trace_run(client, up_id, repo, seen, up_match))
        upstream = seen[up_id]
        unverified = (
            up_match == tags.MATCH_LATEST
            and upstream.status != "?"
            and not _verified_by_output_hash(client, upstream, node)
        )
        if unverified:
            node.problems.append(
                f"upstream {stage} matched only as its latest run (DVC skipped it here) "
                "and no output hash confirms it"
            )
    return node


def trace(client: MlflowClient, ref: str, repo: str | Path = ".") -> Lineage:
    """Lineage of registered model version `ref` (`name/version`) as recorded in MLflow."""
    name, version = parse_model_ref(ref)
    try:
        model_version = client.get_model_version(name, version)
    except MlflowException as err:
        raise RecFoundError(f"model version {name}/{version} not found: {err.message}") from None
    lineage = Lineage(name, version)
    if not model_version.run_id:
        lineage.problems.append("the model version names no source run")
        return lineage
    lineage.source_run = _trace_run(client, model_version.run_id, Path(repo), {}, None)
    return lineage


def _describe(node: RunNode) -> list[str]:
    how = f", matched as {node.match}" if node.match else ""
    head = f"{node.stage} run {node.run_id} [{node.status}{how}]"
    if node.seen_before:
        return [f"{head} (shown above)"]
    t = node.tags
    lines = [head]
    pipeline = t.get(tags.PIPELINE_ID, "-")
    flow_run = t.get(tags.FLOW_RUN_ID)
    lines.append(
        f"  pipeline: {pipeline}" + (f" (Prefect flow run {flow_run})" if flow_run else "")
    )
    lines.append(f"  data md5: {t.get(tags.DATA_MD5, '-')}")
    dirty = " (uncommitted changes)" if t.get(tags.GIT_DIRTY) == "true" else ""
    lines.append(f"  git commit: {t.get(tags.GIT_COMMIT, '-')}{dirty}")
    if t.get(tags.GIT_IGNORED):
        lines.append(f"  ignored, no stage reads them: uncommitted {t[tags.GIT_IGNORED]}")
    deps = {
        k.removeprefix(tags.DEP_PREFIX): v for k, v in t.items() if k.startswith(tags.DEP_PREFIX)
    }
    lines.extend(f"  dep {path}: {md5}" for path, md5 in sorted(deps.items()))
    lines.extend(f"  param {key} = {value}" for key, value in sorted(node.params.items()))
    lines.extend(f"  {UNTRACED}: {problem}" for problem in node.problems)
    return lines


def render(lineage: Lineage) -> list[str]:
    """Human-readable lines: the version, then each run indented under its downstream run."""
    lines = [f"model version {lineage.model}/{lineage.version}"]
    lines.extend(f"  {UNTRACED}: {problem}" for problem in lineage.problems)

    def walk(node: RunNode, depth: int) -> None:
        pad = "    " * depth
        lines.extend(pad + line for line in _describe(node))
        if not node.seen_before:
            for child in node.upstream:
                walk(child, depth + 1)

    if lineage.source_run is not None:
        walk(lineage.source_run, 1)
    problems = lineage.all_problems()
    lines.append(
        f"{len(problems)} untraced item(s)" if problems else "fully traced: every link verified"
    )
    return lines
