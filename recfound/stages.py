"""The stage contract: what each pipeline stage runs, reads, writes, declares and keeps.

dvc.yaml is the declaration of every stage's deps, params, outs, metrics and plots, because DVC
must read them there; `read_stages` reads them back, with its `${paths.<key>}` templates
resolved by DVC's own parser against params.yaml (`resolve_dvc_yaml`), so every reader sees the
paths DVC uses. This module declares only what dvc.yaml cannot say, once per stage (`CONTRACTS`,
in dvc.yaml's order):

- `entry`: the function `recfound stage <name>` calls (dvc.yaml's cmd and the Prefect flow both
  end there);
- `writes`: the params.yaml `paths` entries the stage writes (each one a dvc.yaml out of the
  stage, or a directory holding its outs);
- `artifacts`: which of those outputs the stage's MLflow run keeps, and under which artifact dir.

What follows from it: the CLI's stages, MLflow's artifact list, and the two fingerprints that
mean "the settings a result depends on" (`declared_settings`: resumable training checkpoints,
ablation variants). tests/test_stage_contract.py checks dvc.yaml against it: the same stages in
the same order as `orchestration.stages`, artifacts inside the stage's outs, the written
`paths` inside its outs (with params.yaml's paths and with every one moved), no path spelled out
that params.yaml chooses, and deps that cover every recfound module the stage imports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from recfound.errors import RecFoundError, setting_for

if TYPE_CHECKING:  # config.py needs nothing from here, but keep the import graph one-way
    from recfound.config import Config

DVC_YAML = "dvc.yaml"
PARAMS_YAML = "params.yaml"
# The repository this package is run from (installed editable, `pip install -e .`): its dvc.yaml
# is the one the code was written against, wherever the process's working directory is.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Artifact:
    """Output kept by a stage's MLflow run: `pattern` under `paths.<field>` ('' = the path
    itself, a glob matches files), logged under artifact dir `dest` ('' = the run's root)."""

    field: str
    pattern: str
    dest: str

    def local_paths(self, cfg: Config) -> list[Path]:
        """The paths this artifact names under `cfg`'s paths (a glob: the files it matches)."""
        base = Path(getattr(cfg.paths, self.field))
        if not self.pattern:
            return [base]
        if _GLOB_CHARS & set(self.pattern):
            return sorted(base.glob(self.pattern))
        return [base / self.pattern]

    def declared_path(self, cfg: Config) -> Path:
        """Where the artifact lies, without globbing: the glob's fixed directory part."""
        fixed = [p for p in Path(self.pattern).parts if not _GLOB_CHARS & set(p)]
        return Path(getattr(cfg.paths, self.field)).joinpath(*fixed)


@dataclass(frozen=True)
class StageContract:
    """What dvc.yaml cannot declare about one stage (see the module docstring)."""

    name: str
    entry: str  # "module:function", called with the Config
    writes: tuple[str, ...]  # fields of params.yaml's `paths`
    artifacts: tuple[Artifact, ...] = ()


CONTRACTS: tuple[StageContract, ...] = (
    StageContract(
        "build",
        "recfound.data.build:run",
        writes=("unified",),
        artifacts=(Artifact("unified", "build.json", "build"),),  # task set + ingest report
    ),
    StageContract("base_model", "recfound.model.base_model:run", writes=("base_model",)),
    StageContract(
        "validate",
        "recfound.data.validate:run",
        writes=("validation",),
        artifacts=(Artifact("validation", "", "validation"),),
    ),
    StageContract(
        "train",
        "recfound.train.stage:run",
        writes=("checkpoints", "adapter", "train_metrics"),
        artifacts=(Artifact("train_metrics", "", "train"),),
    ),
    StageContract(
        "merge",
        "recfound.merge.stage:run",
        writes=("merged",),
        artifacts=(Artifact("merged", "adapter", "merged_adapter"),),
    ),
    StageContract(
        "index",
        "recfound.index.stage:run",
        writes=("index",),
        # the manifests only: the vectors are as large as the catalogue, and DVC versions them
        artifacts=(Artifact("index", "index.json", "index"),),
    ),
    StageContract(
        "evaluate",
        "recfound.evaluate.stage:run",
        writes=("reports",),
        artifacts=(
            Artifact("reports", "results.md", ""),
            Artifact("reports", "metrics.json", ""),
            Artifact("reports", "headline/*.json", "headline"),
            Artifact("reports", "comparisons.json", ""),
            Artifact("reports", "learning_curve.csv", ""),
            Artifact("reports", "figures/*.png", "figures"),
        ),
    ),
)


def stage_names() -> list[str]:
    """Every stage, in dvc.yaml's (and the default `orchestration.stages`) order."""
    return [c.name for c in CONTRACTS]


def entry_points() -> dict[str, str]:
    """Stage name -> the `module:function` that `recfound stage <name>` runs."""
    return {c.name: c.entry for c in CONTRACTS}


def contract(name: str) -> StageContract:
    """The contract of stage `name`; an unknown name is an error that lists the stages."""
    for c in CONTRACTS:
        if c.name == name:
            return c
    raise RecFoundError(f"unknown stage {name!r}; expected one of {', '.join(stage_names())}")


@dataclass(frozen=True)
class StageSpec:
    """One stage of dvc.yaml: what it reads, which params it declares, what it writes."""

    name: str
    deps: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    outs: tuple[str, ...] = ()


def _paths(entries: list[Any] | None) -> tuple[str, ...]:
    """dvc.yaml lists entries as plain paths or as {path: {options}} mappings."""
    paths: list[str] = []
    for entry in entries or []:
        paths.extend(entry.keys() if isinstance(entry, dict) else [entry])
    return tuple(str(p).rstrip("/") for p in paths)


def _param_keys(entries: list[Any] | None) -> tuple[str, ...]:
    """Keys a stage declares from params.yaml (entries for other params files are skipped)."""
    keys: list[str] = []
    for entry in entries or []:
        if isinstance(entry, str):
            keys.append(entry)
        elif isinstance(entry, dict):
            keys.extend(k for k in entry.get(PARAMS_YAML) or [])
    return tuple(keys)


def parse_stages(doc: Any) -> dict[str, StageSpec]:
    """The stages of a parsed, resolved dvc.yaml document (no `${...}` left), by name, in file
    order."""
    stages: dict[str, StageSpec] = {}
    for name, body in ((doc or {}).get("stages") or {}).items():
        stages[name] = StageSpec(
            name=name,
            deps=_paths(body.get("deps")),
            params=_param_keys(body.get("params")),
            outs=_paths(body.get("outs")) + _paths(body.get("metrics")) + _paths(body.get("plots")),
        )
    return stages


class _ParsingRepo:
    """What `dvc.parsing.DataResolver` reads of a `dvc.repo.Repo`: its file system and config.

    The config's `parsing` section only formats booleans and lists interpolated into a `cmd`;
    dvc.yaml's cmds hold no templates, so the defaults resolve the same paths. A whole `Repo`
    would need a `.dvc` directory and writes to `.dvc/tmp` when opened.
    """

    def __init__(self) -> None:
        from dvc.fs import LocalFileSystem

        self.fs = LocalFileSystem()
        self.config: dict[str, Any] = {}


def resolve_dvc_yaml(repo: str | Path = ".") -> dict[str, Any]:
    """`repo`/dvc.yaml with every `${...}` substituted as `dvc repro` does it ({} without one).

    DVC's parser (`dvc.parsing.DataResolver`) does the work: `repo`/params.yaml's top-level keys
    (and any `vars:`) are the template variables, so `${paths.checkpoints}` is whatever
    params.yaml's `paths.checkpoints` says now. A template naming no such key is an error.
    Only the stages come back (top-level metrics/plots/params stay as written).
    """
    from dvc.exceptions import DvcException
    from dvc.parsing import DataResolver

    path = Path(repo) / DVC_YAML
    if not path.is_file():
        return {}
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    try:
        resolved = DataResolver(_ParsingRepo(), str(path.parent.resolve()), doc).resolve()
    except DvcException as err:  # e.g. "Could not find 'paths.checkpoints'"
        raise RecFoundError(f"{path}: {err}") from None
    return {**doc, **resolved}


def read_stages(repo: str | Path = ".") -> dict[str, StageSpec]:
    """All stages of `repo`/dvc.yaml, by name, in file order, their paths resolved against
    `repo`/params.yaml (`resolve_dvc_yaml`); empty when there is no dvc.yaml."""
    return parse_stages(resolve_dvc_yaml(repo))


def check_outs_inside(repo: str | Path, stage: str, cfg: Config) -> None:
    """Refuse, before `stage` runs, outs of `repo`/dvc.yaml that lie outside `repo` once
    symlinks are resolved (an absolute path elsewhere, `..`, a symlinked directory).

    DVC 3 saves no such output (git calls it outside the repository; a cached one is an
    "external output"), and it finds out only after the stage ran: a whole training lost. The
    error names the `paths.*` setting to change (read from `cfg`).
    """
    root = Path(repo).resolve()
    spec = read_stages(repo).get(stage)
    outside = [
        o for o in (spec.outs if spec else ()) if not (root / o).resolve().is_relative_to(root)
    ]
    if not outside:
        return
    settings = {f"paths.{name}": root / path for name, path in cfg.paths}  # relative to repo
    named = sorted({setting_for(root / o, settings) or o for o in outside})
    raise RecFoundError(
        f"stage {stage}: output {', '.join(outside)} resolves outside {root} (an absolute path "
        f"or a symlink), where DVC cannot save it; point {', '.join(named)} at a directory "
        "inside the repository (for another disk, mount it there)"
    )


def declared_params(stage: str) -> tuple[str, ...]:
    """The params.yaml keys `stage` declares in the project's dvc.yaml (e.g. `model.dtype`)."""
    stages = read_stages(PROJECT_ROOT)
    if stage not in stages:
        raise RecFoundError(f"{PROJECT_ROOT / DVC_YAML}: no stage {stage!r}")
    return stages[stage].params


def declared_settings(
    cfg: Config, stages: Iterable[str], leave_out: Iterable[str] = ()
) -> dict[str, Any]:
    """`cfg`'s values of the params the given stages declare in dvc.yaml, nested as in
    params.yaml (`model.dtype` -> {"model": {"dtype": ...}}), less the dotted keys `leave_out`.

    What DVC reruns a stage for is what its results depend on; fingerprints hash this.
    """
    values = cfg.model_dump(mode="json", by_alias=True)
    settings: dict[str, Any] = {}
    # sorted: a section ("model") comes before its keys ("model.dtype"), which it already holds
    for key in sorted({key for stage in stages for key in declared_params(stage)}):
        *parents, leaf = key.split(".")
        source, target = values, settings
        for part in parents:
            source = source[part]
            target = target.setdefault(part, {})
        target.setdefault(leaf, source[leaf])
    for key in leave_out:
        *parents, leaf = key.split(".")
        node = settings
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return settings
