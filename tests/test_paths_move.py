"""Paths that move (docs/operations.md): every `paths` entry of params.yaml may point elsewhere,
and `dvc repro`, the stage contract, MLflow and lineage follow.

dvc.yaml takes its paths from params.yaml (`${paths.checkpoints}`); the tests of that file
itself are in tests/test_stage_contract.py. Here: the raw data's .dvc file and the stage lock
follow params.yaml in what lineage reads from git, and the whole tiny pipeline runs under real
DVC with every path moved (tests/repo_helpers.MOVED_PATHS: checkpoints and adapter to a
`scratch/` directory, the rest under `elsewhere/`, the raw data to `raw/data`).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from repo_helpers import MOVED_PATHS, git, move_paths, pipeline_env, write_yaml

from recfound.config import load_config
from recfound.stages import CONTRACTS, stage_names
from recfound.tracking import git_dvc, lineage, tags

PIPELINE_TIMEOUT_S = 900


# --- what lineage reads from git follows params.yaml


def test_the_raw_data_dvc_file_is_the_one_paths_data_names():
    assert git_dvc.data_dvc_file(None) == "data.dvc"
    assert git_dvc.data_dvc_file("seed: 1\n") == "data.dvc"  # no paths: the default
    assert git_dvc.data_dvc_file("paths:\n  data: raw/data\n") == "raw/data.dvc"


def test_data_md5_reads_the_dvc_file_params_yaml_names_now_and_at_a_commit(tmp_path: Path):
    git(tmp_path, "init", "-q")
    write_yaml(tmp_path / "params.yaml", {"paths": {"data": "raw/data"}})
    write_yaml(tmp_path / "raw/data.dvc", {"outs": [{"md5": "a" * 32 + ".dir", "path": "data"}]})
    write_yaml(tmp_path / "data.dvc", {"outs": [{"md5": "f" * 32 + ".dir", "path": "data"}]})
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "raw data at raw/data")
    commit = git_dvc.git_commit(tmp_path)

    assert git_dvc.data_md5(tmp_path) == "a" * 32 + ".dir"
    assert git_dvc.data_dvc_file_at(tmp_path, commit) == "raw/data.dvc"
    assert git_dvc.data_md5_at(tmp_path, commit) == "a" * 32 + ".dir"
    # moved back in the working tree: the commit still says what it said
    write_yaml(tmp_path / "params.yaml", {"paths": {"data": "data"}})
    assert git_dvc.data_md5(tmp_path) == "f" * 32 + ".dir"
    assert git_dvc.data_md5_at(tmp_path, commit) == "a" * 32 + ".dir"


def test_the_locks_wherever_they_are_are_no_uncommitted_change(tmp_path: Path):
    git(tmp_path, "init", "-q")
    move = {key: MOVED_PATHS[key] for key in git_dvc.PROCESS_STATE_PATHS}
    write_yaml(tmp_path / "params.yaml", {"paths": move})
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "init")
    for held in (move["stage_lock"], move["workspace_lock"], f"{move['workspace_queue']}/t.json"):
        (tmp_path / held).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / held).write_text("{}")
    assert git_dvc.source_dirty_paths(tmp_path) == []
    (tmp_path / "code.py").write_text("x = 2\n")  # an edit still counts
    assert git_dvc.source_dirty_paths(tmp_path) == ["code.py"]


# --- the tiny pipeline with every path moved, end to end


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def moved_pipeline_repo(repo: Path, tiny_model_dir: Path, env: dict[str, str]) -> Path:
    """The tiny pipeline repo (tests/test_flows.py) with every `paths` entry moved and
    committed: the raw data by `dvc move` (its .dvc file goes along), the git-tracked
    `reports/variants` by `git mv`."""
    from test_flows import SCRIPTS, make_pipeline_repo

    make_pipeline_repo(repo, tiny_model_dir, {"prefect": 1, "mlflow": 2})
    (repo / MOVED_PATHS["data"]).parent.mkdir(parents=True)
    _run([str(SCRIPTS / "dvc"), "move", "data", MOVED_PATHS["data"]], repo, env)
    (repo / MOVED_PATHS["reports"]).mkdir(parents=True)
    git(repo, "mv", "reports/variants", f"{MOVED_PATHS['reports']}/variants")
    move_paths(repo / "params.yaml", MOVED_PATHS)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "every path moved")
    return repo


def _runs_by_stage(traced: lineage.Lineage) -> dict[str, lineage.RunNode]:
    found: dict[str, lineage.RunNode] = {}
    stack = [traced.source_run] if traced.source_run else []
    while stack:
        node = stack.pop()
        if not node.seen_before:
            found[node.stage] = node
            stack.extend(node.upstream)
    return found


def test_the_pipeline_with_every_path_moved_writes_there_and_lineage_follows(
    tmp_path: Path, tiny_model_dir: Path
):
    from test_flows import SCRIPTS

    env = pipeline_env(OMP_NUM_THREADS="1", TQDM_DISABLE="1")
    dvc = str(SCRIPTS / "dvc")
    repo = moved_pipeline_repo(tmp_path / "repo", tiny_model_dir, env)

    began = time.monotonic()
    done = subprocess.run(
        [dvc, "repro"], cwd=repo, env=env, capture_output=True, text=True,
        timeout=PIPELINE_TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    print(f"dvc repro, every path moved: {time.monotonic() - began:.0f} s")

    # every output where params.yaml puts it, nothing at the default places
    stages = git_dvc.read_stages(repo)
    assert list(stages) == stage_names()
    for spec in stages.values():
        for out in spec.outs:
            assert out.startswith(("scratch/", "elsewhere/")), (spec.name, out)
            assert (repo / out).exists(), (spec.name, out)
    assert sorted(p.name for p in (repo / "scratch/checkpoints").glob("step-*"))
    assert (repo / "scratch/adapter").is_dir() and any((repo / "scratch/adapter").iterdir())
    assert not (repo / "artifacts").exists()
    leftovers = [p for p in (repo / "reports").rglob("*") if p.is_file()]
    assert not leftovers, leftovers
    cfg = load_config(repo / "params.yaml")
    for contract in CONTRACTS:  # the stage contract reads the moved paths
        outs = stages[contract.name].outs
        for field in contract.writes:
            path = getattr(cfg.paths, field).as_posix()
            assert path == MOVED_PATHS[field]
            assert path in outs or any(Path(path) in Path(out).parents for out in outs)

    # DVC: up to date, and the templates made no param of `paths`
    assert json.loads(_run([dvc, "status", "--json"], repo, env)) == {}
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert {out["path"] for out in lock["train"]["outs"]} == set(stages["train"].outs)
    assert set(lock["train"]["params"]["params.yaml"]) == {"seed", "model", "train", "s2sched"}
    assert git_dvc.source_dirty_paths(repo) == []  # DVC's writes and the moved stage lock

    # lineage: every link verified, through the moved data, checkpoints and adapter
    uri = f"sqlite:///{repo / 'mlflow.db'}"
    # the registry too: an earlier test in this process may have set a global registry URI
    client = MlflowClient(uri, registry_uri=uri)
    traced = lineage.trace(client, f"{cfg.tracking.registered_model}/1", repo)
    assert traced.all_problems() == [], "\n".join(lineage.render(traced))
    runs = _runs_by_stage(traced)
    assert set(runs) == set(stage_names())
    data_md5 = git_dvc.dvc_file_md5((repo / "raw/data.dvc").read_text())
    assert data_md5 and {run.tags[tags.DATA_MD5] for run in runs.values()} == {data_md5}
    assert runs["build"].tags[f"{tags.DEP_PREFIX}raw/data"] == data_md5
    produced = git_dvc.lock_out_hashes(repo)
    for stage, dep in [
        ("merge", "scratch/checkpoints"),
        ("evaluate", "scratch/adapter"),
        ("train", "elsewhere/unified"),
        ("evaluate", "elsewhere/index"),
    ]:
        assert runs[stage].tags[f"{tags.DEP_PREFIX}{dep}"] == produced[dep], (stage, dep)
    assert "train" in runs["merge"].tags[tags.UPSTREAM_STAGES].split(",")
    logged = {a.path for a in client.list_artifacts(runs["train"].run_id, "train")}
    assert "train/steps.jsonl" in logged  # MLflow keeps paths.train_metrics from its new place


@pytest.fixture(autouse=True)
def _no_user_mlflow_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stages' tracking store is the repo's own sqlite file (params.yaml)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
