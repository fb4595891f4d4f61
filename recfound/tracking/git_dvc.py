"""Read-only facts about the code and data a run used: git commit, data.dvc md5, dvc.lock hashes.

Everything here reads files (dvc.yaml, dvc.lock, *.dvc, params.yaml) or asks `git`; nothing
runs DVC or Prefect, so the library stays free of orchestration (dvc.yaml's `${paths.*}`
templates are resolved by DVC's parser, in recfound.stages). Every path follows params.yaml's
`paths`: the stages' deps and outs, and the raw data's .dvc file (`<paths.data>.dvc`). A missing
file or a directory that is not a git repository gives `None` / empty results: the caller
records what it could not trace instead of failing the stage.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from recfound.config import Paths

# dvc.yaml's stages are read in one place, the stage contract.
from recfound.stages import PARAMS_YAML, StageSpec, read_stages

DVC_LOCK = "dvc.lock"
# `paths` entries that hold process state (locks, the flow runs' queue), never a run's input
PROCESS_STATE_PATHS = ("stage_lock", "workspace_lock", "workspace_queue")


def _git(repo: Path, *args: str) -> str | None:
    """stdout of `git <args>` in `repo`, or None when git fails (no repo, unknown object)."""
    try:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    except FileNotFoundError:  # git not installed
        return None
    return done.stdout if done.returncode == 0 else None


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _read_text(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.is_file() else None


def git_commit(repo: str | Path = ".") -> str | None:
    """The full hash of HEAD, or None outside a git repository / before the first commit."""
    out = _git(Path(repo), "rev-parse", "--verify", "HEAD")
    return out.strip() if out else None


def commit_exists(repo: str | Path, commit: str) -> bool:
    """Whether `commit` names a commit object in this repository."""
    return _git(Path(repo), "cat-file", "-e", f"{commit}^{{commit}}") is not None


def git_dirty_paths(repo: str | Path = ".") -> list[str]:
    """Paths with uncommitted changes (modified, staged or untracked, not ignored)."""
    out = _git(Path(repo), "status", "--porcelain", "--untracked-files=all")
    if not out:
        return []
    # porcelain v1: two status letters, a space, the path ("old -> new" for renames)
    return [line[3:].split(" -> ")[-1].strip('"') for line in out.splitlines() if line]


def written_by_pipeline(
    path: str, stages: dict[str, StageSpec], process_state: tuple[str, ...] = ()
) -> bool:
    """Whether `dvc repro` writes `path` itself: dvc.lock, .gitignore files, stage outputs,
    or the stages' process state (`process_state`: the lock and queue paths).

    Uncached outputs (metrics, plots) show up in `git status` after a run; DVC means them to
    be committed with dvc.lock, so they are the pipeline's record, not someone's edit.
    """
    if Path(path).name in (DVC_LOCK, ".gitignore"):
        return True
    if any(_overlaps(path, held) for held in process_state):
        return True
    return any(_overlaps(path, out) for spec in stages.values() for out in spec.outs)


def _params_paths(params_text: str | None) -> dict[str, Any]:
    """The `paths` section of a params.yaml text ({} when absent or unreadable)."""
    try:
        doc = yaml.safe_load(params_text) if params_text else None
    except yaml.YAMLError:
        return {}
    paths = doc.get("paths") if isinstance(doc, dict) else None
    return paths if isinstance(paths, dict) else {}


def process_state_paths(repo: str | Path = ".") -> tuple[str, ...]:
    """Where `repo`/params.yaml puts the locks and the queue (`PROCESS_STATE_PATHS`)."""
    paths = _params_paths(_read_text(Path(repo) / PARAMS_YAML))
    defaults = Paths()
    return tuple(
        Path(paths.get(key) or getattr(defaults, key)).as_posix() for key in PROCESS_STATE_PATHS
    )


def source_dirty_paths(repo: str | Path = ".") -> list[str]:
    """Uncommitted changes other than what `dvc repro` itself writes while it runs.

    Counting DVC's own writes would make every later stage of one `dvc repro` look like it
    ran on edited code; so would the stage lock, wherever `paths.stage_lock` puts it.
    """
    stages = read_stages(repo)
    held = process_state_paths(repo)
    return [p for p in git_dirty_paths(repo) if not written_by_pipeline(p, stages, held)]


def git_show(repo: str | Path, commit: str, path: str) -> str | None:
    """Text of `path` as committed in `commit`, or None when it did not exist there."""
    return _git(Path(repo), "show", f"{commit}:{path}")


def dvc_file_md5(text: str | None) -> str | None:
    """The md5 DVC recorded in a `.dvc` file's first output (a directory md5 ends in `.dir`)."""
    if not text:
        return None
    doc = yaml.safe_load(text) or {}
    outs = doc.get("outs") or []
    return outs[0].get("md5") if outs else None


def data_dvc_file(params_text: str | None) -> str:
    """The .dvc file that tracks the raw data, `<paths.data>.dvc`, as the given params.yaml
    text sets `paths.data` (`data.dvc` by default, and without a text or the key)."""
    data = _params_paths(params_text).get("data") or Paths().data
    return f"{Path(data).as_posix()}.dvc"


def data_md5(repo: str | Path = ".", dvc_file: str | None = None) -> str | None:
    """The md5 of the raw data as recorded in the working tree's `dvc_file` (default: the
    `<paths.data>.dvc` of `repo`/params.yaml, i.e. `data.dvc`)."""
    repo = Path(repo)
    dvc_file = dvc_file or data_dvc_file(_read_text(repo / PARAMS_YAML))
    return dvc_file_md5(_read_text(repo / dvc_file))


def data_dvc_file_at(repo: str | Path, commit: str) -> str:
    """The raw data's .dvc file as params.yaml at `commit` names it (`data_dvc_file`)."""
    return data_dvc_file(git_show(repo, commit, PARAMS_YAML))


def data_md5_at(repo: str | Path, commit: str, dvc_file: str | None = None) -> str | None:
    """The md5 `dvc_file` recorded at `commit` (default: `data_dvc_file_at` that commit; None
    when the file was not committed there)."""
    dvc_file = dvc_file or data_dvc_file_at(repo, commit)
    return dvc_file_md5(git_show(repo, commit, dvc_file))


def _overlaps(a: str, b: str) -> bool:
    """Same path, or one lies inside the other (`artifacts/merged` vs `artifacts/merged/x`)."""
    pa, pb = Path(a), Path(b)
    return pa == pb or pa in pb.parents or pb in pa.parents


def upstream_stages(repo: str | Path, stage: str) -> list[str]:
    """Stages whose outputs the given stage reads directly (its parents in the DAG)."""
    stages = read_stages(repo)
    if stage not in stages:
        return []
    deps = stages[stage].deps
    return [
        other.name
        for other in stages.values()
        if other.name != stage and any(_overlaps(d, o) for d in deps for o in other.outs)
    ]


def lock_out_hashes(repo: str | Path = ".") -> dict[str, str]:
    """md5 of every stage output recorded in dvc.lock, by output path."""
    doc = _read_yaml(Path(repo) / DVC_LOCK) or {}
    hashes: dict[str, str] = {}
    for body in (doc.get("stages") or {}).values():
        for out in body.get("outs") or []:
            if "md5" in out:
                hashes[str(out["path"]).rstrip("/")] = out["md5"]
    return hashes


def stage_dep_hashes(repo: str | Path, stage: str) -> dict[str, str]:
    """Content hashes of a stage's deps that are known *while the stage runs*.

    DVC writes a stage's own dvc.lock entry only after its command exits, so during the run:
    - a dep produced by an upstream stage: the md5 dvc.lock holds for that output (DVC wrote it
      when the upstream stage finished, i.e. in this same `dvc repro`);
    - a dep tracked by a `.dvc` file (raw `paths.data` -> `data.dvc`): the md5 in that file;
    - source code deps are left out: the git commit (and the dirty flag) identifies them.
    """
    repo = Path(repo)
    stages = read_stages(repo)
    if stage not in stages:
        return {}
    produced = lock_out_hashes(repo)
    hashes: dict[str, str] = {}
    for dep in stages[stage].deps:
        if dep in produced:
            hashes[dep] = produced[dep]
            continue
        md5 = dvc_file_md5(_read_text(repo / f"{dep}.dvc"))
        if md5:
            hashes[dep] = md5
    return hashes


def stage_params(repo: str | Path, stage: str, params_file: str | Path = PARAMS_YAML) -> dict:
    """The params.yaml values a stage declares in dvc.yaml (`build` -> the whole build section).

    Returns a nested mapping keyed by the declared dotted keys; a key missing from params.yaml
    is absent from the result (DVC itself would refuse to run such a stage).
    """
    repo = Path(repo)
    spec = read_stages(repo).get(stage)
    params = _read_yaml(repo / params_file) or {}
    if spec is None:
        return {}
    values: dict[str, Any] = {}
    for key in spec.params:
        node: Any = params
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            values[key] = node
    return values
