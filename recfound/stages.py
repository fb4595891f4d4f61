"""The stage contract: every fact about each pipeline stage, declared once (`CONTRACTS`).

Per stage, in pipeline order: the function `recfound stage <name>` calls (`entry`: dvc.yaml's
cmd and the Prefect flow both end there); its data deps, the code directories it depends on
whole, the params.yaml keys it declares, its outs, metrics and plots (each a place under a
params.yaml `paths` entry, named by recfound.outputs, with DVC's options), and what its MLflow
run keeps: artifacts, metrics files, the registered model.

dvc.yaml is generated from it (recfound.dvc_yaml; `recfound contract --write`, `--check`): the
code deps add to `code` every module of the stage's import closure (recfound.imports) that no
declared directory covers, so a module the stage imports cannot be missing from its deps. The
data paths are written as `${paths.<key>}` templates, which DVC fills in from params.yaml.

What follows from the contract at run time, without reading dvc.yaml: the CLI's stages,
MLflow's artifacts and metrics (recfound.tracking.mlflow_run), the outs a stage must be able to
save (`check_outs_inside`), and the fingerprints that mean "the settings a result depends on"
(`declared_settings`: resumable training checkpoints, ablation variants). Lineage reads the
repository's dvc.yaml (`read_stages`, its templates resolved by DVC's own parser against
params.yaml, `resolve_dvc_yaml`), since it describes that repository's runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from recfound import outputs as out
from recfound.errors import RecFoundError, setting_for

if TYPE_CHECKING:  # config.py needs nothing from here, but keep the import graph one-way
    from recfound.config import Config

DVC_YAML = "dvc.yaml"
PARAMS_YAML = "params.yaml"
# The repository this package is run from (installed editable, `pip install -e .`): its dvc.yaml
# is the one generated from this contract, wherever the process's working directory is.
PROJECT_ROOT = Path(__file__).resolve().parents[1]
_GLOB_CHARS = frozenset("*?[")


def _under(key: str, name: str) -> str:
    """`${key}` or `${key}/name`: a path as dvc.yaml spells it, filled in from params.yaml."""
    return f"${{{key}}}/{name}" if name else f"${{{key}}}"


@dataclass(frozen=True)
class Dep:
    """A data dep: the place params.yaml's `key` names (`paths.unified`, `validate.suites`),
    or `name` inside it; `note` says why the stage reads it (a comment in dvc.yaml)."""

    key: str
    name: str = ""
    note: str = ""

    @property
    def dvc_path(self) -> str:
        return _under(self.key, self.name)


@dataclass(frozen=True)
class Code:
    """A directory (or file) of the repository the stage depends on whole: a package it owns
    (a new module there reruns it), or files no import names (vendored assets)."""

    path: str
    note: str = ""


@dataclass(frozen=True)
class Param:
    """A params.yaml key (a section or a dotted leaf) the stage's results depend on."""

    key: str
    note: str = ""


@dataclass(frozen=True)
class Out:
    """What the stage writes: `paths.<field>`, or `name` inside it, with DVC's options
    (`persist`: kept when the stage reruns; `cache`: false for small files kept in git)."""

    field: str
    name: str = ""
    persist: bool = False
    cache: bool = True
    note: str = ""

    @property
    def dvc_path(self) -> str:
        return _under(f"paths.{self.field}", self.name)

    def path(self, cfg: Config) -> Path:
        base = Path(getattr(cfg.paths, self.field))
        return base / self.name if self.name else base

    def options(self) -> dict[str, Any]:
        """dvc.yaml's options of the entry, only those that differ from DVC's defaults."""
        opts: dict[str, Any] = {"persist": True} if self.persist else {}
        return opts | ({} if self.cache else {"cache": False})


@dataclass(frozen=True)
class Plot(Out):
    """A CSV plot (`dvc plots show`): columns `x` and `y`, drawn with .dvc/plots/`template`."""

    x: str = "step"
    y: str = ""
    template: str = ""
    title: str = ""

    def options(self) -> dict[str, Any]:
        opts: dict[str, Any] = {"x": self.x, "y": self.y}
        opts |= {"template": self.template} if self.template else {}
        opts |= {"title": self.title} if self.title else {}
        return opts | super().options()


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
class LoggedMetrics:
    """A metrics file the stage's MLflow run logs: `name` under `paths.<field>`, read as
    `steps` (JSON lines, one optimizer step each: MLflow metrics with step=) or `tree` (one JSON
    document, its numeric leaves flattened to `a/b/c`)."""

    field: str
    name: str
    form: Literal["steps", "tree"]

    def path(self, cfg: Config) -> Path:
        return Path(getattr(cfg.paths, self.field)) / self.name


@dataclass(frozen=True)
class StageContract:
    """Everything about one stage (see the module docstring)."""

    name: str
    entry: str  # "module:function", called with the Config
    deps: tuple[Dep, ...] = ()
    code: tuple[Code, ...] = ()
    params: tuple[Param, ...] = ()
    outs: tuple[Out, ...] = ()
    metrics: tuple[Out, ...] = ()
    plots: tuple[Plot, ...] = ()
    artifacts: tuple[Artifact, ...] = ()
    logged_metrics: tuple[LoggedMetrics, ...] = ()
    registers_model: bool = False  # after the stage: the merged model, a registry version
    # Why a module of the import closure is a dep (dvc.yaml comments): (path, note) pairs
    code_notes: tuple[tuple[str, str], ...] = ()
    # Comment lines above a list of dvc.yaml ("deps", "params", "outs", "metrics", "plots")
    section_notes: tuple[tuple[str, str], ...] = ()

    @property
    def cmd(self) -> str:
        return f"recfound stage {self.name}"

    @property
    def writes(self) -> tuple[str, ...]:
        """The params.yaml `paths` entries the stage writes (each an out or holding some)."""
        return tuple(dict.fromkeys(o.field for o in (*self.outs, *self.metrics, *self.plots)))

    @property
    def param_keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.params)

    def out_paths(self, cfg: Config) -> list[Path]:
        """Every out, metric and plot of the stage, where `cfg`'s paths put them."""
        return [o.path(cfg) for o in (*self.outs, *self.metrics, *self.plots)]


# What reads an adapter through recfound.model.inference: the stages that load one
_INFERENCE_READERS = Code("recfound/data/readers", "through recfound.model.inference (JSONL input)")
_PER_TASK_PLOT = "long format (step,task,value): template .dvc/plots/per_task.json, a line per task"

CONTRACTS: tuple[StageContract, ...] = (
    StageContract(
        "build",
        "recfound.data.build:run",
        deps=(Dep("paths.data"),),
        code=(Code("recfound/data"),),
        params=(Param("build"),),
        outs=(Out("unified"),),
        artifacts=(Artifact("unified", out.BUILD_MANIFEST, "build"),),  # task set + ingest report
    ),
    StageContract(
        "base_model",
        "recfound.model.base_model:run",
        params=(Param("model.base"),),
        outs=(Out("base_model"),),
    ),
    StageContract(
        "validate",
        "recfound.data.validate:run",
        deps=(
            Dep("paths.data"),
            Dep("paths.unified"),
            Dep("validate.suites", note="the GX suites (expectations/)"),
        ),
        code=(
            Code("recfound/assets/web", "vendored CSS/JS copied into the Data Docs (offline)"),
            Code("recfound/data/readers"),
        ),
        params=(
            Param("validate"),
            Param("build.max_line_bytes", "the raw suites read the files with the build's bound"),
        ),
        outs=(Out("validation"),),
        artifacts=(Artifact("validation", "", "validation"),),
    ),
    StageContract(
        "train",
        "recfound.train.stage:run",
        deps=(
            Dep("paths.validation", note="the data gate: train runs only after validate passed"),
            Dep("paths.base_model"),
            Dep("paths.unified"),
        ),
        code=(Code("recfound/train"), Code("recfound/model"), _INFERENCE_READERS),
        params=(Param("seed"), Param("model"), Param("train"), Param("s2sched")),
        outs=(
            Out("checkpoints", persist=True),
            Out("train_metrics", out.STEPS_FILE, persist=True),
            Out("train_metrics", out.SAMPLES_DIR, persist=True),
            Out("adapter"),
            Out(
                "train_metrics",
                out.VAL_LOSS_FILE,
                cache=False,
                note="no DVC metric: `dvc metrics show` is the headline",
            ),
        ),
        plots=(
            Plot("train_metrics", out.LOSS_CSV, cache=False, y="loss", template="per_task"),
            Plot(
                "train_metrics",
                out.RATIO_CSV,
                cache=False,
                y="ratio",
                template="per_task",
                title="S2Sched sample ratio per task (Figure 3)",
            ),
        ),
        artifacts=(Artifact("train_metrics", "", "train"),),
        logged_metrics=(LoggedMetrics("train_metrics", out.STEPS_FILE, "steps"),),
        code_notes=(
            ("recfound/stages.py", "the checkpoint fingerprint: the params declared here"),
        ),
        section_notes=(
            ("outs", "persist: a re-run after a kill resumes from the newest checkpoint, log kept"),
            ("plots", _PER_TASK_PLOT),
        ),
    ),
    StageContract(
        "merge",
        "recfound.merge.stage:run",
        deps=(
            Dep("paths.base_model"),
            Dep("paths.checkpoints"),
            Dep("paths.unified", note="validation split only (best_per_task); never test"),
        ),
        code=(Code("recfound/merge"), Code("recfound/model"), _INFERENCE_READERS),
        params=(
            Param("seed"),
            Param("merge"),
            Param("train", "best_per_task uses training's validation loss and its settings"),
            Param("model.dtype"),
            Param("model.temperature"),
        ),
        outs=(Out("merged"),),
        artifacts=(Artifact("merged", out.MERGED_ADAPTER_DIR, "merged_adapter"),),
        code_notes=(
            ("recfound/train/__init__.py", "merge.select: validation losses as training has them"),
        ),
    ),
    StageContract(
        "index",
        "recfound.index.stage:run",
        deps=(
            Dep("paths.base_model"),
            Dep("paths.merged", note="the merged adapter embeds the catalogue"),
            Dep("paths.unified", note="catalogue.parquet (the items) + the task set (train)"),
        ),
        code=(Code("recfound/model"), _INFERENCE_READERS),
        params=(
            Param("index.exact_max_items"),
            Param("index.hnsw_m"),
            Param("index.hnsw_ef_construction"),
            Param("model.dtype"),
        ),
        outs=(Out("index"),),
        # the manifests only: the vectors are as large as the catalogue, and DVC versions them
        artifacts=(Artifact("index", out.INDEX_SUMMARY_FILE, "index"),),
        section_notes=(
            (
                "params",
                "what is built: not top_k / overfetch / hnsw_ef_search (searching) nor "
                "batch_size / chunk_items (speed, memory)",
            ),
        ),
    ),
    StageContract(
        "evaluate",
        "recfound.evaluate.stage:run",
        deps=(
            Dep("paths.base_model"),
            Dep("paths.merged"),
            Dep("paths.adapter", note='"RecFound w/o Model Merge"'),
            Dep("paths.checkpoints", note="the learning curve: validation metric per checkpoint"),
            Dep("paths.unified", note="test split (+ train for popularity / random)"),
            Dep("paths.train_metrics", out.RATIO_CSV),
            Dep("paths.reports", out.VARIANTS_DIR, note="`recfound ablate` results (git-tracked)"),
            Dep("paths.index", note="RecFound's catalogue index per embedding task"),
        ),
        code=(
            Code("recfound/evaluate"),
            Code("recfound/model"),
            Code("recfound/index", "full-catalogue search and metrics"),
            _INFERENCE_READERS,
        ),
        params=(
            Param("seed"),
            Param("evaluate"),
            Param("model.dtype"),
            Param("build.max_history", "leave-one-out queries render as the build's U2I rows"),
        ),
        metrics=(Out("reports", out.HEADLINE_DIR, cache=False),),
        outs=(
            Out("reports", out.METRICS_FILE, cache=False, note="every metric, with intervals"),
            Out("reports", out.COMPARISONS_FILE, cache=False, note="RecFound minus each system"),
            Out("reports", out.RESULTS_FILE, cache=False, note="the tables, without dvc pull"),
            Out("reports", out.FIGURES_DIR),
            Out("reports", out.PREDICTIONS_DIR),
            Out("reports", out.EVIDENCE_DIR, note="per-row statistics behind every interval"),
        ),
        plots=(
            Plot(
                "reports",
                out.CURVE_FILE,
                cache=False,
                y="score",
                template="per_task",
                title="Validation metric per checkpoint (learning curve; metric column names it)",
            ),
        ),
        artifacts=(
            Artifact("reports", out.RESULTS_FILE, ""),
            Artifact("reports", out.METRICS_FILE, ""),
            Artifact("reports", f"{out.HEADLINE_DIR}/*.json", out.HEADLINE_DIR),
            Artifact("reports", out.COMPARISONS_FILE, ""),
            Artifact("reports", out.CURVE_FILE, ""),
            Artifact("reports", f"{out.FIGURES_DIR}/*.png", out.FIGURES_DIR),
        ),
        logged_metrics=(LoggedMetrics("reports", out.METRICS_FILE, "tree"),),
        registers_model=True,
        code_notes=(
            ("recfound/merge/layout.py", "the merged adapter's layout"),
            ("recfound/train/checkpoint.py", "the learning curve's checkpoints"),
            ("recfound/stages.py", "the variants' settings fingerprint"),
        ),
        section_notes=(
            (
                "metrics",
                "one primary metric per task and system with its interval: `dvc "
                "metrics show` fits a terminal (the detail is metrics.json)",
            ),
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
    """Refuse, before `stage` runs, outs of its contract that lie outside `repo` once `cfg`'s
    paths are followed and symlinks resolved (an absolute path elsewhere, `..`, a symlinked
    directory).

    DVC 3 saves no such output (git calls it outside the repository; a cached one is an
    "external output"), and it finds out only after the stage ran: a whole training lost. The
    error names the `paths.*` setting to change.
    """
    root = Path(repo).resolve()
    outside = [
        p.as_posix()
        for p in contract(stage).out_paths(cfg)
        if not (root / p).resolve().is_relative_to(root)
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
    """The params.yaml keys `stage` declares in its contract (e.g. `model.dtype`)."""
    return contract(stage).param_keys


def declared_settings(
    cfg: Config, stages: Iterable[str], leave_out: Iterable[str] = ()
) -> dict[str, Any]:
    """`cfg`'s values of the params the given stages declare (their contracts), nested as in
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
