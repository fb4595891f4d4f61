"""`recfound lineage`: a model version traced to runs, data hash, git commit and params.

Runs are made by the real stage-run context manager in a temporary git repository (files
only: dvc.yaml, dvc.lock, data.dvc), so the tags are the ones the pipeline writes; each test
then breaks one link and expects it reported as UNTRACED.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from repo_helpers import git, write_yaml
from typer.testing import CliRunner

from recfound.cli import app
from recfound.config import Config
from recfound.errors import RecFoundError
from recfound.stages import StageSpec
from recfound.tracking import git_dvc, lineage, tags
from recfound.tracking.mlflow_run import stage_run

DATA_MD5 = "0123456789abcdef0123456789abcdef.dir"
DVC_YAML = {
    "stages": {
        "build": {
            "cmd": "x",
            "deps": ["data"],
            "params": ["build.seed"],
            "outs": ["artifacts/unified"],
        },
        "train": {
            "cmd": "x",
            "deps": ["artifacts/unified"],
            "params": ["train.lr"],
            "outs": ["artifacts/adapter"],
        },
        "evaluate": {
            "cmd": "x",
            "deps": ["artifacts/adapter"],
            "params": ["evaluate.batch_size"],
            "outs": ["reports/metrics.json"],
        },
    }
}


def _set_lock(repo: Path, unified: str, adapter: str) -> None:
    """dvc.lock as DVC leaves it after build and train ran (their outputs' md5)."""
    write_yaml(
        repo / "dvc.lock",
        {
            "schema": "2.0",
            "stages": {
                "build": {"outs": [{"path": "artifacts/unified", "md5": unified}]},
                "train": {"outs": [{"path": "artifacts/adapter", "md5": adapter}]},
            },
        },
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lineage-mlflow")


@pytest.fixture
def repo(tmp_path: Path, store: Path, monkeypatch: pytest.MonkeyPatch, request) -> Path:
    """A committed repo (working directory) whose params.yaml points at a per-test experiment."""
    for name in ("MLFLOW_TRACKING_URI", tags.PIPELINE_ID_ENV, tags.FLOW_RUN_ID_ENV):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    cfg = Config()
    tracking = cfg.tracking.model_copy(
        update={
            "uri": f"sqlite:///{store / 'mlflow.db'}",
            "artifact_root": str(store / "artifacts"),
            "experiment": request.node.name,
            "registered_model": request.node.name,
            "register_model": False,
        }
    )
    write_yaml(
        root / "params.yaml",
        cfg.model_copy(update={"tracking": tracking}).model_dump(by_alias=True, mode="json"),
    )
    write_yaml(root / "dvc.yaml", DVC_YAML)
    write_yaml(root / "data.dvc", {"outs": [{"md5": DATA_MD5, "path": "data"}]})
    (root / ".gitignore").write_text("artifacts/\nreports/\n")
    _set_lock(root, "u1.dir", "a1.dir")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    monkeypatch.chdir(root)
    return root


def _cfg() -> Config:
    from recfound.config import load_config

    return load_config("params.yaml")


def run_pipeline(pipeline: str, stages: list[str], monkeypatch: pytest.MonkeyPatch) -> dict:
    """Stage runs of one execution (as the Prefect flow would make them); run ids by stage."""
    monkeypatch.setenv(tags.PIPELINE_ID_ENV, pipeline)
    ids = {}
    for stage in stages:
        with stage_run(_cfg(), stage) as run:
            ids[stage] = run.info.run_id
    return ids


def register(run_id: str) -> str:
    """A model version whose source run is `run_id` (the model files are not needed here)."""
    cfg = _cfg()
    client = MlflowClient(cfg.tracking.uri)
    name = cfg.tracking.registered_model
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    version = client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    return f"{name}/{version.version}"


def trace(ref: str) -> lineage.Lineage:
    return lineage.trace(MlflowClient(_cfg().tracking.uri), ref, ".")


def test_a_clean_pipeline_is_traced_to_runs_data_commit_and_params(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = run_pipeline("p1", ["build", "train", "evaluate"], monkeypatch)
    report = trace(register(ids["evaluate"]))
    assert report.all_problems() == []
    evaluate = report.source_run
    assert (evaluate.stage, evaluate.run_id) == ("evaluate", ids["evaluate"])
    (train,) = evaluate.upstream
    (build,) = train.upstream
    assert (train.run_id, build.run_id) == (ids["train"], ids["build"])
    text = "\n".join(lineage.render(report))
    commit = git_dvc.git_commit(repo)
    for expected in (
        f"data md5: {DATA_MD5}",
        f"git commit: {commit}",
        "param train.lr = 0.001",
        "dep artifacts/unified: u1.dir",
        "fully traced",
    ):
        assert expected in text
    assert lineage.UNTRACED not in text


def test_a_deleted_upstream_run_is_untraced(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = run_pipeline("p1", ["build", "train", "evaluate"], monkeypatch)
    MlflowClient(_cfg().tracking.uri).delete_run(ids["train"])
    problems = trace(register(ids["evaluate"])).all_problems()
    assert problems == [f"train run {ids['train']}: run is deleted (in the trash)"]


def test_an_upstream_run_missing_from_the_store_is_untraced(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = run_pipeline("p1", ["build", "train", "evaluate"], monkeypatch)
    client = MlflowClient(_cfg().tracking.uri)
    client.set_tag(ids["evaluate"], tags.upstream_tag("train"), "f" * 32)
    text = "\n".join(lineage.render(trace(register(ids["evaluate"]))))
    assert "UNTRACED: run not found (deleted from the tracking store)" in text
    assert "1 untraced item(s)" in text


def test_data_not_matching_data_dvc_at_the_commit_is_untraced(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # data.dvc changed but not committed: the runs record a commit whose data.dvc differs
    write_yaml(repo / "data.dvc", {"outs": [{"md5": "e" * 32 + ".dir", "path": "data"}]})
    ids = run_pipeline("p1", ["build", "train", "evaluate"], monkeypatch)
    problems = trace(register(ids["evaluate"])).all_problems()
    assert any(
        p.startswith(f"build run {ids['build']}: data md5 {'e' * 32}.dir does not match data.dvc")
        for p in problems
    )
    assert any("uncommitted changes when it ran" in p for p in problems)


def test_a_missing_lineage_tag_is_untraced(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = run_pipeline("p1", ["build", "train", "evaluate"], monkeypatch)
    MlflowClient(_cfg().tracking.uri).delete_tag(ids["build"], tags.GIT_COMMIT)
    problems = trace(register(ids["evaluate"])).all_problems()
    assert problems == [f"build run {ids['build']}: missing tag {tags.GIT_COMMIT} (git commit)"]


def test_an_upstream_stage_with_no_run_is_untraced(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = run_pipeline("p1", ["train", "evaluate"], monkeypatch)  # build never tracked
    problems = trace(register(ids["evaluate"])).all_problems()
    assert problems == [f"train run {ids['train']}: no run recorded for upstream stage build"]


def test_a_cached_upstream_stage_is_traced_when_an_output_hash_confirms_it(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = run_pipeline("p1", ["build", "train", "evaluate"], monkeypatch)
    # p2: params of train changed, DVC skipped build (cached): same artifacts/unified bytes
    second = run_pipeline("p2", ["train", "evaluate"], monkeypatch)
    report = trace(register(second["evaluate"]))
    train = report.source_run.upstream[0]
    assert train.upstream[0].run_id == first["build"]
    assert train.upstream[0].match == tags.MATCH_LATEST
    assert report.all_problems() == []


def test_a_cached_upstream_stage_without_matching_output_hash_is_untraced(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_pipeline("p1", ["build", "train", "evaluate"], monkeypatch)
    _set_lock(repo, "u2.dir", "a2.dir")  # unified changed, yet no build run in p2
    second = run_pipeline("p2", ["train", "evaluate"], monkeypatch)
    problems = trace(register(second["evaluate"])).all_problems()
    assert problems == [
        f"train run {second['train']}: upstream build matched only as its latest run "
        "(DVC skipped it here) and no output hash confirms it"
    ]


def test_cli_prints_the_lineage_and_strict_fails_when_anything_is_untraced(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = run_pipeline("p1", ["build", "train", "evaluate"], monkeypatch)
    ref = register(ids["evaluate"])
    runner = CliRunner()
    clean = runner.invoke(app, ["lineage", ref, "--strict"])
    assert clean.exit_code == 0, clean.output
    assert f"model version {ref}" in clean.output and "fully traced" in clean.output
    MlflowClient(_cfg().tracking.uri).delete_run(ids["build"])
    broken = runner.invoke(app, ["lineage", ref, "--strict"])
    assert broken.exit_code == 1
    assert "UNTRACED: run is deleted (in the trash)" in broken.output
    assert runner.invoke(app, ["lineage", ref]).exit_code == 0  # reporting alone never fails


def test_a_malformed_or_unknown_model_reference_is_a_clear_error(repo: Path) -> None:
    with pytest.raises(RecFoundError, match="expected <model-name>/<version>"):
        lineage.parse_model_ref("recfound")
    assert lineage.parse_model_ref("models:/recfound/3") == ("recfound", "3")
    result = CliRunner().invoke(app, ["lineage", "nosuchmodel/1"])
    assert result.exit_code == 1
    assert "model version nosuchmodel/1 not found" in result.output


# --- which uncommitted changes count


def test_only_changes_that_can_change_a_stage_count() -> None:
    stages = {"build": StageSpec("build", deps=("data", "recfound/data"), outs=("artifacts/u",))}
    counted = ["params.yaml", "dvc.yaml", "data.dvc", "models/base.dvc", "data/new.csv"]
    counted.append("recfound/data/build.py")
    ignored = ["repro.log", "notes.md", "docs/x.md", "tests/test_x.py", "recfound/other.py"]
    for path in counted:
        assert lineage.can_change_a_stage(path, stages), path
    for path in ignored:
        assert not lineage.can_change_a_stage(path, stages), path


def test_an_untracked_log_leaves_the_runs_traced_and_is_listed_as_ignored(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "repro.log").write_text("make repro > repro.log\n")  # e.g. a user's own log
    ids = run_pipeline("p1", ["build", "train", "evaluate"], monkeypatch)
    report = trace(register(ids["evaluate"]))
    assert report.all_problems() == []
    text = "\n".join(lineage.render(report))
    assert "ignored, no stage reads them: uncommitted repro.log" in text
    assert "fully traced" in text and "(uncommitted changes)" not in text


def test_an_uncommitted_change_a_stage_reads_is_untraced_and_named(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (repo / "repro.log").write_text("log\n")
    (repo / "data").mkdir()
    (repo / "data" / "extra.csv").write_text("a,b\n")  # under build's dep `data`
    ids = run_pipeline("p1", ["build"], monkeypatch)
    problems = trace(register(ids["build"])).all_problems()
    assert problems == [
        f"build run {ids['build']}: uncommitted changes when it ran, to what a stage reads "
        "(data/extra.csv): the code may differ from the commit"
    ]


def test_a_long_list_of_changes_is_cut_in_its_tag() -> None:
    paths = [f"f{i}.txt" for i in range(lineage.TAG_PATHS_MAX + 5)]
    tag = lineage.paths_tag(paths)
    assert tag.split(",")[: lineage.TAG_PATHS_MAX] == paths[: lineage.TAG_PATHS_MAX]
    assert tag.endswith("... (5 more)") and lineage.paths_tag([]) is None
