"""MLflow stage runs: params, lineage tags, metrics, artifacts, the registered pyfunc model.

Each test works in a temporary git repository with its own dvc.yaml / dvc.lock / data.dvc
(files only: reading them is all the tracking code does) and logs to a temporary SQLite
MLflow store shared by the module (one experiment per test keeps them apart).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from repo_helpers import git, write_yaml

from recfound import processes
from recfound.config import Config
from recfound.data.unified import BUILD_MANIFEST
from recfound.errors import DataError, RecFoundError, StageTerminated
from recfound.model.export import EXPORT_INDEX_FILE
from recfound.model.inference import generate_batch
from recfound.model.prompts import generation_prompt
from recfound.tasks import task_by_code
from recfound.tracking import git_dvc, pyfunc, tags
from recfound.tracking.faults import FAULT_MARKER_ENV, FAULT_ONCE_ENV, InjectedFault
from recfound.tracking.mlflow_run import (
    flatten,
    metric_name,
    read_metrics_json,
    read_step_metrics,
    stage_run,
)
from recfound.tracking.serving import post_json, serve_model, strict_json

DATA_MD5 = "0123456789abcdef0123456789abcdef.dir"
UNIFIED_MD5 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.dir"
ADAPTER_MD5 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.dir"
# The task set the registered test model records: what the requests below ask for, no more.
REGISTERED_TASKS = ("U2I", "Q2I", "SR", "SA", "PM")
TRAINED_INSTRUCTIONS = {"SA": "How many stars? Answer with A-E.", "Q2I": "Find the product."}

DVC_YAML = {
    "stages": {
        "build": {
            "cmd": "recfound stage build",
            "deps": ["data", "recfound/data"],
            "params": ["build"],
            "outs": ["artifacts/unified"],
        },
        "train": {
            "cmd": "recfound stage train",
            "deps": ["artifacts/unified", "recfound/train"],
            "params": ["train.lr", "train.steps", {"params.yaml": ["seed"]}],
            "outs": ["artifacts/adapter", {"reports/train": {"cache": False}}],
        },
        "evaluate": {
            "cmd": "recfound stage evaluate",
            "deps": ["artifacts/adapter"],
            "params": ["evaluate"],
            "outs": ["reports/metrics.json"],
        },
    }
}


def make_repo(root: Path, data_md5: str = DATA_MD5) -> Path:
    """A committed git repo with dvc.yaml, params.yaml, data.dvc and a dvc.lock for build."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    write_yaml(root / "dvc.yaml", DVC_YAML)
    write_yaml(root / "params.yaml", Config().model_dump(by_alias=True, mode="json"))
    write_yaml(root / "data.dvc", {"outs": [{"md5": data_md5, "path": "data"}]})
    write_yaml(
        root / "dvc.lock",
        {
            "schema": "2.0",
            "stages": {
                "build": {"outs": [{"path": "artifacts/unified", "md5": UNIFIED_MD5}]},
                "train": {"outs": [{"path": "artifacts/adapter", "md5": ADAPTER_MD5}]},
            },
        },
    )
    (root / ".gitignore").write_text("mlflow.db\nmlartifacts/\nartifacts/\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    return root


@pytest.fixture(scope="module")
def tracking_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the module: creating its schema takes seconds."""
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh repository as working directory, with no orchestration variables set."""
    for name in (
        "MLFLOW_TRACKING_URI",
        tags.PIPELINE_ID_ENV,
        tags.FLOW_RUN_ID_ENV,
        FAULT_ONCE_ENV,
        FAULT_MARKER_ENV,
    ):
        monkeypatch.delenv(name, raising=False)
    root = make_repo(tmp_path / "repo")
    monkeypatch.chdir(root)
    return root


def tracked_config(tracking_dir: Path, experiment: str, **tracking: object) -> Config:
    """Default config pointed at the module's store and a per-test experiment."""
    cfg = Config()
    update = {
        "uri": f"sqlite:///{tracking_dir / 'mlflow.db'}",
        "artifact_root": str(tracking_dir / "artifacts"),
        "experiment": experiment,
        **tracking,
    }
    return cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update=update)})


def runs_of(cfg: Config) -> list[mlflow.entities.Run]:
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


# ------------------------------------------------------------------ reading dvc.yaml / git


def test_stage_params_are_the_keys_the_stage_declares_in_dvc_yaml(repo: Path) -> None:
    params = git_dvc.stage_params(repo, "train")
    assert params == {
        "train.lr": Config().train.lr,
        "train.steps": Config().train.steps,
        "seed": Config().seed,
    }
    assert set(git_dvc.stage_params(repo, "build")) == {"build"}


def test_upstream_stages_are_the_producers_of_a_stages_deps(repo: Path) -> None:
    assert git_dvc.upstream_stages(repo, "build") == []
    assert git_dvc.upstream_stages(repo, "train") == ["build"]
    assert git_dvc.upstream_stages(repo, "evaluate") == ["train"]


def test_dep_hashes_come_from_lock_outputs_and_dvc_files_but_not_from_code(repo: Path) -> None:
    assert git_dvc.stage_dep_hashes(repo, "build") == {"data": DATA_MD5}
    # recfound/train is source code: the git commit identifies it, no hash is claimed
    assert git_dvc.stage_dep_hashes(repo, "train") == {"artifacts/unified": UNIFIED_MD5}


def test_dirty_flag_ignores_what_dvc_repro_writes_but_not_params(repo: Path) -> None:
    (repo / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (repo / "sub").mkdir()
    (repo / "sub" / ".gitignore").write_text("/out\n")
    (repo / "reports" / "train").mkdir(parents=True)
    (repo / "reports" / "train" / "val_loss.json").write_text("{}")  # an uncached stage output
    assert git_dvc.source_dirty_paths(repo) == []
    (repo / "params.yaml").write_text((repo / "params.yaml").read_text() + "\n# edited\n")
    assert git_dvc.source_dirty_paths(repo) == ["params.yaml"]


def test_data_md5_at_a_commit_is_read_from_that_commits_data_dvc(repo: Path) -> None:
    first = git_dvc.git_commit(repo)
    write_yaml(repo / "data.dvc", {"outs": [{"md5": "f" * 32 + ".dir", "path": "data"}]})
    git(repo, "commit", "-q", "-am", "new data")
    assert git_dvc.data_md5_at(repo, first) == DATA_MD5
    assert git_dvc.data_md5(repo) == "f" * 32 + ".dir"
    assert git_dvc.commit_exists(repo, first)
    assert not git_dvc.commit_exists(repo, "0" * 40)


# ------------------------------------------------------------------ metrics files


def test_step_metrics_keep_their_step_and_skip_non_numbers(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    lines = [
        {"step": 1, "loss": 2.5, "loss/U2I": 1.0, "ratio/SR": 0.25, "note": "warmup"},
        {"step": 2, "loss": 2.0, "lr": 0.001, "loss_gen": None},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    metrics = {(m.key, m.step): m.value for m in read_step_metrics(path)}
    assert metrics == {
        ("loss", 1): 2.5,
        ("loss/U2I", 1): 1.0,
        ("ratio/SR", 1): 0.25,
        ("loss", 2): 2.0,
        ("lr", 2): 0.001,
    }


def test_a_bad_steps_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"loss": 2.0}\n')
    with pytest.raises(DataError, match=r"steps.jsonl:2: expected an object with an integer"):
        read_step_metrics(path)
    path.write_text('{"step": 1, "loss": 1.0}\nnot json\n')
    with pytest.raises(DataError, match=r"steps.jsonl:2: not JSON"):
        read_step_metrics(path)


def test_metrics_json_is_flattened_to_names_mlflow_accepts(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    doc = {"recfound": {"U2I": {"MRR@20": 0.5, "#invalid": 0}, "SR": {"Recall@1": 1}}, "n": "x"}
    path.write_text(json.dumps(doc))
    assert read_metrics_json(path) == {
        "recfound/U2I/MRR_20": 0.5,
        "recfound/U2I/_invalid": 0.0,
        "recfound/SR/Recall_1": 1.0,
    }
    assert metric_name("a b:c/d.e-f_g") == "a b:c/d.e-f_g"
    assert flatten({"a": {"b": [1, 2]}, "c": {}}) == {"a.b.0": 1, "a.b.1": 2, "c": {}}


# ------------------------------------------------------------------ stage runs


def test_stage_run_logs_declared_params_lineage_tags_and_step_metrics(
    repo: Path, tracking_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tracked_config(tracking_dir, "train-run")
    monkeypatch.setenv(tags.PIPELINE_ID_ENV, "flow-run-1")
    monkeypatch.setenv(tags.FLOW_RUN_ID_ENV, "flow-run-1")
    with stage_run(cfg, "train"):
        steps = cfg.paths.train_metrics / "steps.jsonl"
        steps.parent.mkdir(parents=True)
        steps.write_text(
            "\n".join(json.dumps({"step": s, "loss": 1.0 / s, "ratio/SR": 0.1}) for s in (1, 2, 3))
        )
    (run,) = runs_of(cfg)
    assert run.info.status == "FINISHED"
    assert run.data.params == {
        "train.lr": "0.001",
        "train.steps": str(Config().train.steps),
        "seed": str(Config().seed),
    }
    t = run.data.tags
    assert t[tags.STAGE] == "train"
    assert t[tags.PIPELINE_ID] == t[tags.FLOW_RUN_ID] == "flow-run-1"
    assert t[tags.GIT_COMMIT] == git_dvc.git_commit(repo)
    assert t[tags.GIT_DIRTY] == "false"
    assert t[tags.DATA_MD5] == DATA_MD5
    assert t[f"{tags.DEP_PREFIX}artifacts/unified"] == UNIFIED_MD5
    assert t[tags.UPSTREAM_STAGES] == "build"
    history = MlflowClient(cfg.tracking.uri).get_metric_history(run.info.run_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 1.0), (2, 0.5), (3, 1.0 / 3)]
    artifacts = {a.path for a in MlflowClient(cfg.tracking.uri).list_artifacts(run.info.run_id)}
    assert artifacts == {"train"}


def test_upstream_run_of_the_same_pipeline_is_linked_before_older_ones(
    repo: Path, tracking_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tracked_config(tracking_dir, "upstream-links")
    monkeypatch.setenv(tags.PIPELINE_ID_ENV, "p1")
    with stage_run(cfg, "build") as build_p1:
        pass
    monkeypatch.setenv(tags.PIPELINE_ID_ENV, "p2")
    with stage_run(cfg, "build") as build_p2:
        pass
    monkeypatch.setenv(tags.PIPELINE_ID_ENV, "p1")
    with stage_run(cfg, "train") as train_p1:
        pass
    monkeypatch.setenv(tags.PIPELINE_ID_ENV, "p3")  # DVC skipped build in p3 (cached)
    with stage_run(cfg, "train") as train_p3:
        pass
    t1 = MlflowClient(cfg.tracking.uri).get_run(train_p1.info.run_id).data.tags
    assert t1[tags.upstream_tag("build")] == build_p1.info.run_id
    assert t1[tags.upstream_match_tag("build")] == tags.MATCH_PIPELINE
    t3 = MlflowClient(cfg.tracking.uri).get_run(train_p3.info.run_id).data.tags
    assert t3[tags.upstream_tag("build")] == build_p2.info.run_id
    assert t3[tags.upstream_match_tag("build")] == tags.MATCH_LATEST


def test_plain_dvc_repro_groups_runs_by_commit_and_data(repo: Path, tracking_dir: Path) -> None:
    cfg = tracked_config(tracking_dir, "plain-repro")
    with stage_run(cfg, "build"):
        (repo / "dvc.lock").write_text((repo / "dvc.lock").read_text() + "\n")  # as DVC does
    with stage_run(cfg, "train"):
        pass
    build, train = runs_of(cfg)
    commit = git_dvc.git_commit(repo)
    assert build.data.tags[tags.PIPELINE_ID] == f"local-{commit[:12]}-{DATA_MD5[:12]}"
    assert train.data.tags[tags.PIPELINE_ID] == build.data.tags[tags.PIPELINE_ID]
    assert train.data.tags[tags.upstream_tag("build")] == build.info.run_id
    assert tags.FLOW_RUN_ID not in train.data.tags


def test_a_failing_stage_leaves_a_failed_run_and_logs_no_outputs(
    repo: Path, tracking_dir: Path
) -> None:
    cfg = tracked_config(tracking_dir, "failing")
    with pytest.raises(RuntimeError, match="boom"), stage_run(cfg, "train"):
        steps = cfg.paths.train_metrics / "steps.jsonl"
        steps.parent.mkdir(parents=True)
        steps.write_text(json.dumps({"step": 1, "loss": 1.0}))
        raise RuntimeError("boom")
    (run,) = runs_of(cfg)
    assert run.info.status == "FAILED"
    assert run.data.metrics == {}


@pytest.mark.parametrize("stop", [StageTerminated, KeyboardInterrupt])
def test_a_stage_told_to_stop_leaves_a_killed_run_naming_its_process(
    repo: Path, tracking_dir: Path, stop: type[BaseException]
) -> None:
    cfg = tracked_config(tracking_dir, f"stopped-{stop.__name__}")
    with pytest.raises(stop), stage_run(cfg, "train"):
        raise stop()
    (run,) = runs_of(cfg)
    assert run.info.status == "KILLED"
    assert run.data.tags[tags.PROCESS_HOST] == socket.gethostname()
    assert run.data.tags[tags.PROCESS_PID] == str(os.getpid())
    assert float(run.data.tags[tags.PROCESS_START]) == pytest.approx(
        processes.start_time(os.getpid()), abs=processes.START_TOLERANCE_S
    )


def test_injected_fault_fails_the_first_attempt_only(
    repo: Path, tracking_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tracked_config(tracking_dir, "fault")
    monkeypatch.setenv(FAULT_ONCE_ENV, "build")
    monkeypatch.setenv(FAULT_MARKER_ENV, str(repo.parent / "fault-fired"))
    body_ran = []
    with pytest.raises(InjectedFault), stage_run(cfg, "build"):
        body_ran.append(1)
    with stage_run(cfg, "build"):
        body_ran.append(2)
    with stage_run(cfg, "train"):  # another stage is never affected
        body_ran.append(3)
    assert body_ran == [2, 3]
    assert [r.info.status for r in runs_of(cfg)] == ["FAILED", "FINISHED", "FINISHED"]


def test_mlflow_tracking_uri_variable_overrides_params(
    repo: Path, tracking_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = f"sqlite:///{tracking_dir / 'mlflow.db'}"
    cfg = tracked_config(tracking_dir, "override", uri="sqlite:///never-created.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", elsewhere)
    with stage_run(cfg, "build"):
        pass
    assert not (repo / "never-created.db").exists()
    assert (
        len(
            runs_of(
                cfg.model_copy(
                    update={"tracking": cfg.tracking.model_copy(update={"uri": elsewhere})}
                )
            )
        )
        == 1
    )


def test_tracking_disabled_runs_the_stage_without_mlflow(repo: Path, tracking_dir: Path) -> None:
    cfg = tracked_config(tracking_dir, "disabled", enabled=False)
    with stage_run(cfg, "build") as run:
        assert run is None
    assert MlflowClient(cfg.tracking.uri).get_experiment_by_name("disabled") is None


# ------------------------------------------------------------------ registered model


@pytest.fixture(scope="module")
def registered(tiny_model_dir: Path, tracking_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """An `evaluate` stage run on the tiny model + a fresh TMoLE adapter: registers version 1."""
    from transformers import AutoModelForCausalLM

    from recfound.model.adapters import attach_adapter

    root = make_repo(tmp_path_factory.mktemp("registry") / "repo")
    cwd = Path.cwd()
    os.chdir(root)
    try:
        base = Config()
        model_cfg = base.model.model_copy(
            update={"tmole": base.model.tmole.model_copy(update={"task_embedding_dim": 16})}
        )
        cfg = tracked_config(tracking_dir, "registry").model_copy(
            update={
                "model": model_cfg,
                "paths": base.paths.model_copy(update={"base_model": tiny_model_dir}),
                "evaluate": base.evaluate.model_copy(update={"max_new_tokens": 4}),
            }
        )
        write_yaml(Path("params.yaml"), cfg.model_dump(by_alias=True, mode="json"))
        adapter = attach_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), model_cfg)
        adapter.save(cfg.paths.merged / "adapter")
        # the merge stage's record of the task set: a model trained on some tasks only
        task_set = cfg.paths.merged / "tasks" / EXPORT_INDEX_FILE
        task_set.parent.mkdir(parents=True)
        task_set.write_text(json.dumps({"tasks": list(REGISTERED_TASKS)}))
        # the build's record of each task's training instruction: the served default
        cfg.paths.unified.mkdir(parents=True)
        manifest = {"instructions": TRAINED_INSTRUCTIONS}
        (cfg.paths.unified / BUILD_MANIFEST).write_text(json.dumps(manifest))
        with stage_run(cfg, "evaluate") as run:
            cfg.paths.reports.mkdir(parents=True, exist_ok=True)
            metrics = {"recfound": {"U2I": {"MRR@20": 0.25}, "SR": {"Recall@1": 0.5}}}
            (cfg.paths.reports / "metrics.json").write_text(json.dumps(metrics))
            (cfg.paths.reports / "results.md").write_text("| task | metric |\n")
        yield cfg, run.info.run_id
    finally:
        os.chdir(cwd)


def test_evaluate_registers_a_version_with_lineage_tags_and_metrics(registered) -> None:
    cfg, run_id = registered
    client = MlflowClient(cfg.tracking.uri)
    (version,) = client.search_model_versions(f"name = '{cfg.tracking.registered_model}'")
    assert version.run_id == run_id
    run = client.get_run(run_id)
    assert version.tags[tags.DATA_MD5] == run.data.tags[tags.DATA_MD5] == DATA_MD5
    assert version.tags[tags.GIT_COMMIT] == run.data.tags[tags.GIT_COMMIT]
    # the sqlite store leaves version.model_id empty; the source names the logged model
    model = client.get_logged_model(version.source.removeprefix("models:/"))
    assert {m.key: m.value for m in model.metrics} == {
        "recfound/U2I/MRR_20": 0.25,
        "recfound/SR/Recall_1": 0.5,
    }
    assert {a.path for a in client.list_artifacts(run_id)} >= {"results.md", "metrics.json"}


def test_registered_model_generates_for_generative_and_embeds_for_embedding_tasks(
    registered,
) -> None:
    import numpy as np
    import pandas as pd

    cfg, _ = registered
    mlflow.set_tracking_uri(cfg.tracking.uri)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.registered_model}/1")
    frame = pd.DataFrame(
        {
            "task": ["SR", "U2I", "SA", "U2I"],
            "input": ["history: shoes", "user bought socks", "great shirt", "jacket"],
            "instruction": ["Pick the letter.", "Represent the user.", None, "Represent the user."],
        }
    )
    out = model.predict(frame)
    assert list(out["task"]) == ["SR", "U2I", "SA", "U2I"]
    # the SA row gave no instruction: it is asked with the one SA was trained with
    served = model.unwrap_python_model()
    assert served.instructions == TRAINED_INSTRUCTIONS
    prompt = generation_prompt(served.tokenizer, TRAINED_INSTRUCTIONS["SA"], "great shirt")
    [expected] = generate_batch(
        served.model, served.tokenizer, [prompt], task_by_code("SA").id,
        cfg.evaluate.max_new_tokens, 1, progress=False,
    )  # fmt: skip
    assert out["generation"][2] == expected
    assert all(isinstance(g, str) for g in out["generation"][[0, 2]])
    assert out["embedding"][[0, 2]].isna().all() and out["generation"][[1, 3]].isna().all()
    for vector in out["embedding"][[1, 3]]:
        assert np.isclose(np.linalg.norm(vector), 1.0, atol=1e-4)
    with pytest.raises(Exception, match="unknown task"):
        model.predict(pd.DataFrame({"task": ["NOPE"], "input": ["x"]}))
    with pytest.raises(Exception, match="AG is not one this model was trained on"):
        model.predict(pd.DataFrame({"task": ["AG"], "input": ["a question"]}))


def test_a_model_without_a_recorded_task_set_serves_all_tasks(tmp_path: Path) -> None:
    from recfound.tasks import TASKS

    assert pyfunc.read_task_set(None) == tuple(t.code for t in TASKS)
    (tmp_path / "tasks.json").write_text(json.dumps({"tasks": ["PM"]}))
    assert pyfunc.read_task_set(tmp_path / "tasks.json") == ("PM",)
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RecFoundError, match="bad.json"):
        pyfunc.read_task_set(tmp_path / "bad.json")


def test_a_model_logged_without_an_index_refuses_retrieval_with_a_400(registered) -> None:
    import pandas as pd
    from mlflow.exceptions import MlflowException

    cfg, _ = registered
    mlflow.set_tracking_uri(cfg.tracking.uri)
    model = mlflow.pyfunc.load_model(f"models:/{cfg.tracking.registered_model}/1")
    with pytest.raises(MlflowException, match="logged without a catalogue index") as refused:
        model.predict(pd.DataFrame({"task": ["Q2I"], "input": ["red shoes"], "k": [5]}))
    assert refused.value.get_http_status_code() == 400
    # the same row without k is an embedding request, answered as before
    (vector,) = model.predict(pd.DataFrame({"task": ["Q2I"], "input": ["red shoes"]}))["embedding"]
    assert len(vector) > 0


def test_mlflow_models_serve_answers_a_request_with_the_registered_model(registered) -> None:
    cfg, _ = registered
    body = {
        "dataframe_split": {
            "columns": ["task", "input"],
            # the example of docs/operations.md
            "data": [
                [
                    "SA",
                    "Title: Great shirt\nReview: Fits well.\nOptions: A. 1 star, B. 2 stars, "
                    "C. 3 stars, D. 4 stars, E. 5 stars",
                ],
                ["Q2I", "red running shoes"],
            ],
        }
    }
    model_uri = f"models:/{cfg.tracking.registered_model}/1"
    with serve_model(model_uri, {"MLFLOW_TRACKING_URI": cfg.tracking.uri}) as server:
        status, answer = post_json(server.invocations, body)
    assert status == 200, answer
    generation, embedding = answer["predictions"]
    assert generation["task"] == "SA" and isinstance(generation["generation"], str)
    assert embedding["task"] == "Q2I" and len(embedding["embedding"]) > 0
    # strict JSON: what a row does not answer is null, never NaN
    assert generation["embedding"] is None and embedding["generation"] is None
    assert all(row[c] is None for row in (generation, embedding) for c in ("items", "scores"))


def test_the_client_parses_answers_strictly() -> None:
    assert strict_json(b'{"generation": null, "scores": [0.5]}') == {
        "generation": None,
        "scores": [0.5],
    }
    for constant in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError, match=f"not JSON: {constant}"):
            strict_json(f'{{"generation": {constant}}}')
