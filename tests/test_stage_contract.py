"""The stage contract (recfound.stages) writes dvc.yaml, and dvc.yaml's deps cover the code.

`dvc status` is only as truthful as dvc.yaml: a stage that imports a module its deps do not
cover is reported up to date after that module changed. So dvc.yaml is generated from the
contract (recfound.dvc_yaml): each stage's code deps are its import closure within recfound/
(recfound.imports: every `import recfound...` / `from recfound... import`, including imports
inside functions, parent packages' __init__.py too), less what a directory the contract names
whole covers. The committed dvc.yaml must be exactly the generated one.

dvc.yaml names every data path as a params.yaml template (`${paths.checkpoints}`), and
`read_stages` resolves them the way DVC does: checked here on the project and on a copy whose
params.yaml moves every `paths` entry (tests/test_paths_move.py runs that copy with DVC).

The closure starts at the stage's entry module (`recfound.stages.CONTRACTS[...].entry`), not at
`recfound stage <name>`: the CLI and the MLflow wrapper (recfound/cli.py, recfound/tracking/)
record and guard the run, but what a stage writes to its outputs is decided by the stage
function alone. A stage module that imports tracking code gets it into its closure like any
other module.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shutil
from pathlib import Path

import pytest
import yaml
from repo_helpers import MOVED_PATHS, move_paths

from recfound import dvc_yaml
from recfound.config import Config, OrchestrationConfig, Paths, load_config
from recfound.errors import RecFoundError
from recfound.imports import import_closure, module_file
from recfound.stages import (
    CONTRACTS,
    StageSpec,
    check_outs_inside,
    declared_settings,
    entry_points,
    parse_stages,
    read_stages,
    stage_names,
)
from recfound.stages import contract as stage_contract

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = re.compile(r"\$\{([^}]*)\}")


def moved_project(root: Path, moved: dict[str, str] = MOVED_PATHS) -> Path:
    """The project's dvc.yaml and params.yaml in `root`, params.yaml's `paths` moved."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(ROOT / name, root / name)
    move_paths(root / "params.yaml", moved)
    return root


@pytest.fixture(params=["default", "moved"])
def project(request, tmp_path: Path, default_config: Config) -> tuple[dict[str, StageSpec], Config]:
    """dvc.yaml's stages and the config they resolve against: the project's own, and a copy
    whose params.yaml moves every `paths` entry (MOVED_PATHS)."""
    if request.param == "default":
        return read_stages(ROOT), default_config
    root = moved_project(tmp_path / "moved")
    return read_stages(root), load_config(root / "params.yaml")


# --- the import-closure checker


def covers(dep: str, path: str) -> bool:
    """A dep covers a file when it is that file or a directory above it."""
    return dep == path or Path(dep) in Path(path).parents


def uncovered_imports(root: Path, spec: StageSpec, entry: str) -> list[str]:
    """One line per module in the closure of `entry` that none of `spec`'s deps covers."""
    problems = []
    for module, chain in sorted(import_closure(root, entry).items()):
        path = module_file(root, module).relative_to(root).as_posix()
        if not any(covers(dep, path) for dep in spec.deps):
            problems.append(
                f"stage {spec.name}: {path} is not covered by its deps in dvc.yaml "
                f"(imported via {' -> '.join(chain)})"
            )
    return problems


def entry_module(entry: str) -> str:
    return entry.partition(":")[0]


# --- dvc.yaml is what the contract generates


def test_the_committed_dvc_yaml_is_the_one_the_contract_generates():
    differences = dvc_yaml.check(ROOT)
    assert not differences, "run `recfound contract --write`:\n" + "\n".join(differences)


def test_a_hand_edit_of_dvc_yaml_is_named_stage_and_entry(tmp_path: Path):
    shutil.copytree(ROOT / "recfound", tmp_path / "recfound")
    edited = (
        (ROOT / "dvc.yaml")
        .read_text(encoding="utf-8")
        .replace("      - recfound/config.py\n", "", 1)
    )
    (tmp_path / "dvc.yaml").write_text(edited.replace("cache: false", "cache: true", 1))

    differences = dvc_yaml.check(tmp_path)

    assert differences[0] == 'stage build deps: missing "recfound/config.py"'
    assert differences[1].startswith('stage train outs: missing {"${paths.train_metrics}/val_')
    assert len(differences) == 2
    (tmp_path / "dvc.yaml").write_text(dvc_yaml.render(tmp_path) + "# a note\n")
    text_only = dvc_yaml.check(tmp_path)
    assert text_only[0] == "the same stages, other text:" and "-# a note" in text_only


def test_the_generated_dvc_yaml_reads_back_as_the_pipeline_it_renders():
    assert yaml.safe_load(dvc_yaml.render(ROOT)) == dvc_yaml.pipeline(ROOT)


def test_a_module_a_stage_starts_importing_becomes_its_dep(tmp_path: Path):
    shutil.copytree(ROOT / "recfound", tmp_path / "recfound")
    (tmp_path / "recfound/newhelper.py").write_text("X = 1\n")
    stage_file = tmp_path / "recfound/model/base_model.py"
    stage_file.write_text(
        stage_file.read_text() + "\ndef _late():\n    import recfound.newhelper\n"
    )

    deps = [path for path, _ in dvc_yaml.code_deps(stage_contract("base_model"), tmp_path)]

    assert "recfound/newhelper.py" in deps
    assert "recfound/newhelper.py" not in [
        p for p, _ in dvc_yaml.code_deps(stage_contract("base_model"))
    ]


def test_a_note_on_a_module_the_stage_no_longer_imports_is_an_error():
    stale = dataclasses.replace(stage_contract("build"), code_notes=(("recfound/cli.py", "why"),))
    with pytest.raises(RecFoundError, match=r"stage build: .* recfound/cli\.py .* drop the note"):
        dvc_yaml.code_deps(stale)


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_each_whole_directory_dep_holds_code_the_stage_imports(contract):
    """A package named whole whose modules the stage no longer imports reruns it for nothing;
    a directory without Python (vendored assets) is data the stage reads."""
    closure = [
        module_file(ROOT, m).relative_to(ROOT).as_posix()
        for m in import_closure(ROOT, entry_module(contract.entry))
    ]
    for code in contract.code:
        assert (ROOT / code.path).exists(), (contract.name, code.path)
        if any((ROOT / code.path).rglob("*.py")):
            assert any(covers(code.path, p) for p in closure), (contract.name, code.path)


# --- dvc.yaml's deps cover each stage's code


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: c.name)
def test_dvc_yaml_deps_cover_every_module_the_stage_imports(contract):
    spec = read_stages(ROOT)[contract.name]
    problems = uncovered_imports(ROOT, spec, entry_module(contract.entry))
    assert not problems, "\n".join(problems)


def test_a_missing_dep_is_named_with_the_stage_and_the_import_chain():
    real = read_stages(ROOT)["train"]
    without_config = StageSpec("train", tuple(d for d in real.deps if d != "recfound/config.py"))

    problems = uncovered_imports(ROOT, without_config, "recfound.train.stage")

    assert len(problems) == 1
    assert problems[0].startswith("stage train: recfound/config.py is not covered")
    assert "(imported via recfound.train.stage -> recfound.config)" in problems[0]


def test_an_import_inside_a_function_two_modules_deep_joins_the_closure(tmp_path: Path):
    tree = {
        "recfound/__init__.py": "",
        "recfound/stagepkg/__init__.py": "",
        "recfound/stagepkg/run.py": "from recfound import helper\n",
        "recfound/helper.py": "def go():\n    from recfound.deep.leaf import x\n",
        "recfound/deep/__init__.py": "",
        "recfound/deep/leaf.py": "import os\nx = 1\n",
        "recfound/unrelated.py": "",
    }
    for path, text in tree.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    spec = StageSpec("demo", ("recfound/__init__.py", "recfound/stagepkg", "recfound/helper.py"))

    problems = uncovered_imports(tmp_path, spec, "recfound.stagepkg.run")

    assert problems == [
        "stage demo: recfound/deep/__init__.py is not covered by its deps in dvc.yaml "
        "(imported via recfound.stagepkg.run -> recfound.helper -> recfound.deep)",
        "stage demo: recfound/deep/leaf.py is not covered by its deps in dvc.yaml "
        "(imported via recfound.stagepkg.run -> recfound.helper -> recfound.deep.leaf)",
    ]
    widened = StageSpec("demo", (*spec.deps, "recfound/deep"))
    assert uncovered_imports(tmp_path, widened, "recfound.stagepkg.run") == []


def test_the_evaluate_stage_does_not_import_the_ablation_runner():
    """`recfound ablate` trains; the evaluate stage only reads its results (the dependency
    points one way, so the stage's deps need no training loop)."""
    assert "recfound.evaluate.ablate" not in import_closure(ROOT, "recfound.evaluate.stage")
    assert "recfound.evaluate.stage" in import_closure(ROOT, "recfound.evaluate.ablate")


# --- dvc.yaml, the CLI, the Prefect flow and MLflow follow the contract


def test_dvc_yaml_the_contract_and_orchestration_list_the_same_stages_in_order():
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    assert list(read_stages(ROOT)) == stage_names()
    assert list(OrchestrationConfig().stages) == stage_names()
    assert list(load_config(ROOT / "params.yaml").orchestration.stages) == stage_names()
    for name, body in doc["stages"].items():
        assert body["cmd"] == f"recfound stage {name}"


def test_each_entry_point_is_a_function_of_its_module_and_the_cli_runs_it():
    from recfound import cli

    assert entry_points() == cli.STAGES
    for contract in CONTRACTS:
        module, _, function = contract.entry.partition(":")
        path = module_file(ROOT, module)
        assert path is not None, contract.entry
        body = ast.parse(path.read_text(encoding="utf-8")).body
        assert function in {n.name for n in body if isinstance(n, ast.FunctionDef)}, contract


def _inside(path: Path | str, outs: tuple[str, ...]) -> bool:
    return any(covers(out, Path(path).as_posix()) for out in outs)


def _belongs_to(path: Path, stage: str, stages: dict[str, StageSpec]) -> bool:
    """`path` lies inside an out of `stage`, or is a directory of its outs and no one else's."""
    if _inside(path, stages[stage].outs):
        return True
    held = {name for name, spec in stages.items() for out in spec.outs if covers(str(path), out)}
    return held == {stage}


def test_every_mlflow_artifact_is_an_output_of_its_stage(project):
    stages, cfg = project
    for contract in CONTRACTS:
        for artifact in contract.artifacts:
            where = artifact.declared_path(cfg)
            assert _belongs_to(where, contract.name, stages), (contract.name, where)


def test_the_paths_a_stage_writes_are_its_outputs_in_dvc_yaml(project):
    """Each `paths` entry a stage writes is one of its outs or holds some, and each out lies
    under a `paths` entry the stage writes: params.yaml and dvc.yaml name the same places,
    wherever params.yaml puts them."""
    stages, cfg = project
    for contract in CONTRACTS:
        outs = stages[contract.name].outs
        written = [Path(getattr(cfg.paths, f)).as_posix() for f in contract.writes]
        for path in written:
            assert path in outs or any(covers(path, out) for out in outs), (contract.name, path)
        for out in outs:
            assert any(covers(path, out) for path in written), (contract.name, out)


def test_a_drifted_output_path_fails_the_check(default_config: Config):
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    doc["stages"]["merge"]["outs"] = ["artifacts/merged_v2"]
    stages = parse_stages(doc)
    assert not _belongs_to(default_config.paths.merged / "adapter", "merge", stages)
    # a directory holding another stage's outs is no stage's artifact
    assert not _belongs_to(default_config.paths.reports, "evaluate", stages)


# --- dvc.yaml's paths come from params.yaml


def _entries(body: dict) -> list[str]:
    """The paths a raw dvc.yaml stage lists as deps, outs, metrics and plots, as written."""
    found: list[str] = []
    for key in ("deps", "outs", "metrics", "plots"):
        for entry in body.get(key) or []:
            found.extend(entry if isinstance(entry, dict) else [entry])
    return found


def test_every_data_path_in_dvc_yaml_is_a_params_template(default_config: Config):
    """No dep or out spells a place params.yaml chooses (`artifacts/checkpoints`): each is
    `${paths.<key>}` (or `${validate.suites}`), so moving it in params.yaml moves it for DVC."""
    settings = {f"paths.{name}": path.as_posix() for name, path in default_config.paths}
    settings["validate.suites"] = default_config.validate_.suites.as_posix()
    doc = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))
    literal, unknown, templated = [], [], set()
    for name, body in doc["stages"].items():
        for entry in _entries(body):
            used = TEMPLATE.findall(entry)
            templated.update(used)
            unknown.extend(f"stage {name}: {entry}" for key in used if key not in settings)
            if not used and any(covers(path, entry) for path in settings.values()):
                literal.append(f"stage {name}: {entry} (a params.yaml path, spelled out)")
    assert not literal, "\n".join(literal)
    assert not unknown, "\n".join(unknown)
    # every place a stage writes is templated (the locks and validation_raw are no DVC paths)
    assert {f"paths.{f}" for c in CONTRACTS for f in c.writes} <= templated
    assert "paths.data" in templated and "validate.suites" in templated


def test_moved_paths_move_every_paths_entry():
    assert set(MOVED_PATHS) == set(Paths.model_fields)
    assert all(str(getattr(Paths(), key)) != where for key, where in MOVED_PATHS.items())


def test_read_stages_resolves_the_paths_as_dvc_itself_does(tmp_path: Path):
    """DVC's own stage loader (`Repo.index`) on the moved copy: the same deps, outs and
    params; the templates add no param (`paths` is declared by no stage)."""
    from dvc.dependency import ParamsDependency
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    root = moved_project(tmp_path / "repo")
    Repo.init(root, no_scm=True).close()
    ours = read_stages(root)
    with Repo(root) as repo:
        theirs = {s.name: s for s in repo.index.stages if isinstance(s, PipelineStage)}
    assert set(theirs) == set(ours) == set(stage_names())
    for name, spec in ours.items():
        params = [d for d in theirs[name].deps if isinstance(d, ParamsDependency)]
        files = [d for d in theirs[name].deps if not isinstance(d, ParamsDependency)]
        assert set(spec.deps) == {d.def_path for d in files}, name
        assert set(spec.outs) == {o.def_path for o in theirs[name].outs}, name
        assert sorted(spec.params) == sorted(key for d in params for key in d.params), name
        assert not any(key.split(".")[0] == "paths" for key in spec.params), name
    assert "scratch/checkpoints" in ours["train"].outs and "scratch/adapter" in ours["train"].outs
    assert "elsewhere/reports/train/steps.jsonl" in ours["train"].outs
    assert {"raw/data", "elsewhere/unified", "expectations"} <= set(ours["validate"].deps)
    assert "scratch/checkpoints" in ours["merge"].deps
    assert "elsewhere/reports/headline" in ours["evaluate"].outs


def test_a_template_params_yaml_cannot_fill_is_an_error_naming_it(tmp_path: Path):
    root = moved_project(tmp_path)
    doc = yaml.safe_load((root / "params.yaml").read_text())
    del doc["paths"]["checkpoints"]  # the typed config has a default; dvc.yaml does not
    (root / "params.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(RecFoundError, match=r"Could not find 'paths\.checkpoints'"):
        read_stages(root)


def test_a_stage_whose_outputs_dvc_cannot_save_is_refused_before_it_runs(tmp_path: Path):
    """Outside the repository (absolute, or through a symlink) DVC would fail only after the
    stage ran; the stage refuses first, naming the setting."""
    root = moved_project(tmp_path / "repo")
    check_outs_inside(root, "train", load_config(root / "params.yaml"))  # inside: fine

    elsewhere = tmp_path / "other-disk"
    move_paths(root / "params.yaml", {"checkpoints": str(elsewhere / "checkpoints")})
    with pytest.raises(RecFoundError) as absolute:
        check_outs_inside(root, "train", load_config(root / "params.yaml"))
    assert f"output {elsewhere / 'checkpoints'} resolves outside {root.resolve()}" in str(
        absolute.value
    )
    assert "point paths.checkpoints at a directory inside the repository" in str(absolute.value)
    check_outs_inside(root, "merge", load_config(root / "params.yaml"))  # a dep may be anywhere

    elsewhere.mkdir()
    (root / "scratch").symlink_to(elsewhere, target_is_directory=True)
    move_paths(root / "params.yaml", {"checkpoints": "scratch/checkpoints"})
    with pytest.raises(RecFoundError, match=r"point paths\.adapter, paths\.checkpoints at"):
        check_outs_inside(root, "train", load_config(root / "params.yaml"))


# --- fingerprints derive from the params a stage declares


def test_declared_settings_are_the_stage_params_of_dvc_yaml(default_config: Config):
    evaluate = declared_settings(default_config, ["evaluate"])
    assert set(evaluate) == {"seed", "evaluate", "model", "build"}
    assert evaluate["model"] == {"dtype": default_config.model.dtype}  # only model.dtype
    # leave-one-out queries render histories as the build's U2I rows do
    assert evaluate["build"] == {"max_history": default_config.build.max_history}
    trained = declared_settings(default_config, ["train"], leave_out=["train.threads"])
    assert set(trained) == {"seed", "model", "train", "s2sched"}
    assert "threads" not in trained["train"] and "lr" in trained["train"]


def test_a_checkpoint_fingerprint_moves_with_the_train_params_but_not_the_cadence(
    default_config: Config, tmp_path: Path
):
    from recfound.train.loop import run_fingerprint

    class Split:
        _fingerprint = "rows"

    def fingerprint_with(section: str, **values: object) -> str:
        raw = default_config.model_dump(by_alias=True)
        raw[section].update(values)
        return run_fingerprint(Config.model_validate(raw), {"train": Split()}, tmp_path)

    today = fingerprint_with("train")
    assert fingerprint_with("train", lr=0.5) != today
    assert fingerprint_with("s2sched", window=5) != today
    assert fingerprint_with("model", dtype="float32") != today
    assert fingerprint_with("train", save_every=3, log_every=2, threads=1) == today
    assert fingerprint_with("merge", density=0.5) == today  # not a train param


def test_the_fingerprints_read_the_contract_not_a_dvc_yaml(
    default_config: Config, tmp_path: Path, monkeypatch
):
    """No dvc.yaml where the process runs or where the package lies: the same settings."""
    import recfound.stages

    expected = declared_settings(default_config, ["train", "evaluate"])
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(recfound.stages, "PROJECT_ROOT", tmp_path)
    assert declared_settings(default_config, ["train", "evaluate"]) == expected
    assert set(expected) == {"seed", "model", "train", "s2sched", "evaluate", "build"}


# --- MLflow follows the contract; file names are spelled once


def test_every_logged_metrics_file_is_an_output_of_its_stage(project):
    stages, cfg = project
    for contract in CONTRACTS:
        for logged in contract.logged_metrics:
            assert _inside(logged.path(cfg), stages[contract.name].outs), (contract.name, logged)
    assert [c.name for c in CONTRACTS if c.registers_model] == ["evaluate"]


def _string_compares(path: Path) -> list[tuple[int, str]]:
    """(line, constant) of every `x == "const"` / `"const" in ...`-style string comparison."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                if isinstance(operand, ast.Constant) and isinstance(operand.value, str):
                    found.append((node.lineno, operand.value))
    return found


def test_tracking_decides_nothing_by_a_stage_name():
    """What a stage run logs (metrics, artifacts, the registered model) is its contract's to
    say: no `stage == "train"` in recfound/tracking."""
    names = set(stage_names())
    branches = [
        f"{path.relative_to(ROOT)}:{line}: compares with {value!r}"
        for path in sorted((ROOT / "recfound/tracking").glob("*.py"))
        for line, value in _string_compares(path)
        if value in names
    ]
    assert not branches, "\n".join(branches)


def test_output_file_names_are_spelled_only_in_recfound_outputs():
    """metrics.json, steps.jsonl, ... are named in recfound/outputs.py and imported elsewhere:
    no other module of recfound/ or flows/ holds one as a string (or a path ending in one)."""
    from recfound import outputs

    names = {v for k, v in vars(outputs).items() if k.isupper() and "." in v}
    assert {"metrics.json", "steps.jsonl", "learning_curve.csv", "results.md"} <= names
    spelled = []
    for path in sorted([*(ROOT / "recfound").rglob("*.py"), *(ROOT / "flows").rglob("*.py")]):
        if path.name == "outputs.py" and path.parent.name == "recfound":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            if any(node.value == n or node.value.endswith("/" + n) for n in names):
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not spelled, "\n".join(spelled)
