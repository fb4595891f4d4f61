"""The pipeline under Prefect, end to end, with real servers on loopback.

A temporary git + DVC repository gets the project's dvc.yaml, its params.yaml overridden to
the tiny test model and a tiny sample, the source directories dvc.yaml depends on, and the
seeded raw sample (`dvc add data`, committed). `recfound serve` is started there on free
ports: it starts the Prefect server (PREFECT_HOME under the temp repo), the MLflow UI and the
process serving both deployments. The tests then drive it the way a user does, with
`prefect deployment run ...`, and read the outcome from the Prefect API, MLflow and git.

Fault injection: the serving process runs with RECFOUND_FAULT_ONCE=<stage> and a marker
file, so that stage fails on its first attempt only, and the retry must carry the run.
Everything the stages do is the real stage code on the tiny model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from repo_helpers import pipeline_env

from flows.retrain import NOT_RETRAINED, RETRAINED
from recfound import locks, processes
from recfound.config import Config, load_config
from recfound.tracking import git_dvc, tags
from recfound.tracking.faults import FAULT_MARKER_ENV, FAULT_ONCE_ENV

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = Path(sys.executable).parent
RUN_TIMEOUT_S = 600
SERVE_TIMEOUT_S = 240

# Sizes that keep one pass of the pipeline on the tiny model at about a minute on 2 cores.
TINY_PARAMS = {
    "model.tmole.task_embedding_dim": 16,
    "build.sample_caps.train_per_task": 4,
    "build.sample_caps.validation_per_task": 2,
    "build.sample_caps.test_per_task": 2,
    "build.sample_caps.embedding_test_per_task": 2,
    "train.steps": 4,
    "train.save_every": 2,
    "train.eval_batch_size": 4,
    "s2sched.warmup_steps": 2,
    "s2sched.update_interval": 2,
    "s2sched.window": 2,
    "evaluate.max_new_tokens": 4,
    "evaluate.baselines": ["random"],
    "orchestration.retries": 2,
    "orchestration.retry_delay_s": 1,
    "orchestration.progress_interval_s": 30,
}
FAULT_STAGE_PREFERENCE = ("train", "validate", "build")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _set(doc: dict, dotted: str, value: object) -> None:
    """Override an existing params.yaml key (a missing one is a test bug: fail loudly)."""
    *parents, leaf = dotted.split(".")
    node = doc
    for part in parents:
        node = node[part]
    if leaf not in node:
        raise KeyError(f"params.yaml has no {dotted}")
    node[leaf] = value


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _git(repo: Path, *args: str) -> str:
    return _run(["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args], repo)


def pipeline_stages() -> list[str]:
    """orchestration.stages that the project's dvc.yaml defines, in order."""
    defined = git_dvc.read_stages(ROOT)
    return [s for s in load_config(ROOT / "params.yaml").orchestration.stages if s in defined]


def make_pipeline_repo(repo: Path, tiny_model_dir: Path, ports: dict[str, int]) -> Path:
    """A committed git + DVC repo holding the project's pipeline on the tiny model and sample."""
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    _run([str(SCRIPTS / "dvc"), "init", "-q"], repo)
    # the project's DVC settings: plot templates (dvc.yaml names them), the offline HTML page
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    _run([str(SCRIPTS / "dvc"), "config", "core.analytics", "false"], repo)
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, repo / name)
    stages = git_dvc.read_stages(ROOT)
    produced = {out for spec in stages.values() for out in spec.outs}
    sources = {d for spec in stages.values() for d in spec.deps} - produced - {"data"}
    for dep in sorted(sources):  # a directory before the files inside it
        source, target = ROOT / dep, repo / dep
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(
                source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
            )
        else:
            shutil.copy(source, target)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY_PARAMS.items():
        _set(params, key, value)
    _set(params, "model.base", str(tiny_model_dir))
    _set(params, "orchestration.stages", pipeline_stages())
    _set(params, "orchestration.prefect_port", ports["prefect"])
    _set(params, "tracking.ui_port", ports["mlflow"])
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run([str(SCRIPTS / "recfound"), "data", "sample"], repo)
    _run([str(SCRIPTS / "dvc"), "add", "-q", "data"], repo)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "tiny pipeline")
    return repo


class Served:
    """`recfound serve` running in the pipeline repo, and helpers to drive and inspect it."""

    def __init__(self, repo: Path, proc: subprocess.Popen | None, env: dict[str, str]) -> None:
        self.repo, self.proc, self.env = repo, proc, env
        self.cfg: Config = load_config(repo / "params.yaml")

    def deployment_run(self, name: str, *params: str) -> str:
        """`prefect deployment run <name>`; returns the new flow run's id."""
        extra = [arg for p in params for arg in ("--param", p)]
        out = _run(
            [str(SCRIPTS / "prefect"), "deployment", "run", name, *extra], self.repo, self.env
        )
        for line in out.splitlines():
            if "UUID:" in line:
                return line.split("UUID:")[1].strip()
        raise AssertionError(f"no flow run id in:\n{out}")

    def client(self):
        """A Prefect client of this server (the test process has no PREFECT_API_URL)."""
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.env["PREFECT_API_URL"])

    def wait(self, flow_run_id: str):
        """The flow run, once it reached a final state (fails after RUN_TIMEOUT_S)."""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        with self.client() as client:
            while True:
                run = client.read_flow_run(flow_run_id)
                if run.state is not None and run.state.is_final():
                    return run
                assert self.proc.poll() is None, "recfound serve died"
                assert time.monotonic() < deadline, f"flow run {flow_run_id} still {run.state}"
                time.sleep(2)

    def mlflow(self) -> MlflowClient:
        return MlflowClient(f"sqlite:///{self.repo / 'mlflow.db'}")

    def stage_runs(self, pipeline_id: str) -> list:
        client = self.mlflow()
        experiment = client.get_experiment_by_name(self.cfg.tracking.experiment)
        if experiment is None:
            return []
        return client.search_runs(
            [experiment.experiment_id],
            f"tags.`{tags.PIPELINE_ID}` = '{pipeline_id}'",
            order_by=["attributes.start_time ASC"],
        )


def _prefect_api_settings(port: int) -> dict[str, str]:
    return {
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # a queued run re-asks for its deployment slot every second, not every 30
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path):
    base, repo, ports = new_pipeline_repo(tmp_path_factory, tiny_model_dir, "flows")
    fault_stage = next(s for s in FAULT_STAGE_PREFERENCE if s in pipeline_stages())
    env = serve_env(
        ports["prefect"],
        **{FAULT_ONCE_ENV: fault_stage, FAULT_MARKER_ENV: str(base / "fault-fired")},
    )
    served = Served(repo, None, env)
    served.fault_stage = fault_stage
    with serving(served, base / "serve.log"):
        yield served


def new_pipeline_repo(
    factory: pytest.TempPathFactory, tiny_model_dir: Path, name: str
) -> tuple[Path, Path, dict[str, int]]:
    """A fresh temp directory `name`, the pipeline repo in it (make_pipeline_repo) and the free
    ports its `recfound serve` will use."""
    ports = {"prefect": _free_port(), "mlflow": _free_port()}
    base = factory.mktemp(name)
    return base, make_pipeline_repo(base / "repo", tiny_model_dir, ports), ports


def serve_env(prefect_port: int, **extra: str) -> dict[str, str]:
    """What `recfound serve` runs with: this environment less its Prefect and MLflow settings,
    the server's API settings, this environment's scripts first on PATH, and `extra`."""
    return pipeline_env(**_prefect_api_settings(prefect_port), **extra)


@contextmanager
def serving(served: Served, log_path: Path) -> Iterator[Served]:
    """`recfound serve` started (start_serve) for the body, then stopped as Ctrl-C would."""
    try:
        start_serve(served, log_path)
        yield served
    finally:
        if served.proc is not None and served.proc.poll() is None:
            os.killpg(served.proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal would do
            served.proc.wait(timeout=120)


def start_serve(served: Served, log_path: Path) -> None:
    """Start `recfound serve` in the repo, logging to `log_path`; return once it is ready."""
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        served.proc = subprocess.Popen(
            [str(SCRIPTS / "recfound"), "serve"],
            cwd=served.repo,
            env=served.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    served.log = log_path
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while "Ctrl-C stops everything" not in log_path.read_text(errors="replace"):
        assert served.proc.poll() is None, log_path.read_text(errors="replace")[-4000:]
        assert time.monotonic() < deadline, "recfound serve not ready in time"
        time.sleep(1)


@pytest.fixture(scope="module")
def two_train_runs(served: Served):
    """Two `recfound/train` runs started back to back; the second must wait for the first."""
    first = served.deployment_run("recfound/train")
    second = served.deployment_run("recfound/train")
    return served.wait(first), served.wait(second)


def test_train_deployment_completes_and_mlflow_holds_lineage_tagged_stage_runs(
    served: Served, two_train_runs
) -> None:
    first, _ = two_train_runs
    assert first.state.is_completed(), first.state
    runs = [r for r in served.stage_runs(str(first.id)) if r.info.status == "FINISHED"]
    assert [r.data.tags[tags.STAGE] for r in runs] == pipeline_stages()
    commit = git_dvc.git_commit(served.repo)
    data_md5 = git_dvc.data_md5(served.repo)
    by_stage = {r.data.tags[tags.STAGE]: r for r in runs}
    for run in runs:
        t = run.data.tags
        assert t[tags.FLOW_RUN_ID] == str(first.id)
        assert (t[tags.GIT_COMMIT], t[tags.GIT_DIRTY], t[tags.DATA_MD5]) == (
            commit,
            "false",
            data_md5,
        )
        for upstream in filter(None, t[tags.UPSTREAM_STAGES].split(",")):
            assert t[tags.upstream_tag(upstream)] == by_stage[upstream].info.run_id
            assert t[tags.upstream_match_tag(upstream)] == tags.MATCH_PIPELINE
    if "evaluate" in by_stage:
        client = served.mlflow()
        (version,) = client.search_model_versions(
            f"name = '{served.cfg.tracking.registered_model}'"
        )
        assert version.run_id == by_stage["evaluate"].info.run_id
        lineage = _run(
            [str(SCRIPTS / "recfound"), "lineage", f"{version.name}/{version.version}", "--strict"],
            served.repo,
        )
        assert "fully traced" in lineage
    # the summary: every stage ran in the first run, and says why
    first_line, *stage_lines = first.state.message.splitlines()
    assert first_line.startswith(f"{len(pipeline_stages())} of {len(pipeline_stages())} stages ran")
    assert [line.split()[:2] for line in stage_lines] == [[s, "ran"] for s in pipeline_stages()]


def test_a_run_with_nothing_changed_says_every_stage_was_skipped(
    served: Served, two_train_runs
) -> None:
    _, second = two_train_runs  # waited for the first, then found nothing to do
    assert second.state.message.startswith("nothing to do")
    assert all(" skipped " in line for line in second.state.message.splitlines()[1:])


def test_watching_a_run_shows_what_it_did_and_its_summary(served: Served, two_train_runs) -> None:
    watched = _run(
        [str(SCRIPTS / "prefect"), "deployment", "run", "recfound/train", "--watch"],
        served.repo,
        served.env,
    )
    # the stages' own lines and the summary, not only state changes (logs stream out)
    assert "$ dvc repro train" in watched
    assert "summary: nothing to do" in watched


def test_a_stage_failing_once_is_retried_and_the_flow_still_completes(
    served: Served, two_train_runs
) -> None:
    first, _ = two_train_runs
    assert first.state.is_completed()
    attempts = [
        r for r in served.stage_runs(str(first.id)) if r.data.tags[tags.STAGE] == served.fault_stage
    ]
    assert [r.info.status for r in attempts] == ["FAILED", "FINISHED"]
    with served.client() as client:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[first.id]))
        )
    (faulty,) = [t for t in task_runs if t.name == f"dvc repro {served.fault_stage}"]
    assert faulty.run_count == 2 and faulty.state.is_completed()


def test_a_second_run_waits_for_the_first_and_then_runs(served: Served, two_train_runs) -> None:
    first, second = two_train_runs
    assert second.state.is_completed(), second.state
    with served.client() as client:
        history = [s.name for s in client.read_flow_run_states(second.id)]
    assert "AwaitingConcurrencySlot" in history
    assert second.start_time >= first.end_time
    # nothing changed in between: DVC skipped every stage, so no stage ran (no MLflow run)
    assert served.stage_runs(str(second.id)) == []


def _subflow_runs(served: Served, parent_id: str) -> list:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with served.client() as client:
        return client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent_id])
            )
        )


def test_data_change_deployment_trains_nothing_when_data_is_unchanged(
    served: Served, two_train_runs
) -> None:
    head = git_dvc.git_commit(served.repo)
    run = served.wait(served.deployment_run("recfound-retrain/data-change"))
    assert run.state.is_completed()
    assert run.state.message.startswith("unchanged")
    assert _subflow_runs(served, str(run.id)) == []
    assert git_dvc.git_commit(served.repo) == head


def _stages_up_to(last: str) -> list[str]:
    stages = pipeline_stages()
    return stages[: stages.index(last) + 1] if last in stages else stages


def _retrain_after_a_data_change(served: Served, seed: int, stages: list[str]):
    """New raw data (another sample seed), one retrain run; returns (run, subflow, commit)."""
    repo = served.repo
    before = git_dvc.git_commit(repo)
    _run([str(SCRIPTS / "recfound"), "data", "sample", "--seed", str(seed)], repo)
    run = served.wait(
        served.deployment_run("recfound-retrain/data-change", f"stages={json.dumps(stages)}")
    )
    assert run.state.is_completed(), run.state
    (pipeline,) = _subflow_runs(served, str(run.id))
    assert pipeline.state.is_completed()
    return run, pipeline, before


def _assert_committed_data_then_record(served: Served, before: str) -> str:
    """Two commits by the retrain author: data.dvc, then DVC's record; returns the first."""
    repo = served.repo
    log = _git(repo, "log", "--format=%H|%an|%s", f"{before}..HEAD").splitlines()
    author = served.cfg.orchestration.commit_author_name
    assert [line.split("|")[1] for line in log] == [author, author]
    record, data = (line.split("|") for line in log)
    assert data[2].startswith("data: data.dvc -> md5") and record[2].startswith("dvc.lock:")
    assert git_dvc.git_dirty_paths(repo) == []
    return data[0]


def test_data_change_deployment_commits_the_data_and_reruns_the_pipeline_once(
    served: Served, two_train_runs
) -> None:
    # up to validation: the retrain mechanics without a second training (the slow test trains)
    stages = _stages_up_to("validate")
    # what a new user runs after a first run (README): their outputs must not block the commit
    for command in (["dvc", "metrics", "show"], ["dvc", "plots", "show"]):
        _run([str(SCRIPTS / command[0]), *command[1:]], served.repo)
    assert (served.repo / "dvc_plots" / "index.html").is_file()
    assert not [p for p in git_dvc.git_dirty_paths(served.repo) if p.startswith("dvc_plots")]
    assert git_dvc.source_dirty_paths(served.repo) == []  # nothing that would block the commit
    run, pipeline, before = _retrain_after_a_data_change(served, 99, stages)
    # words match deeds: train was not among the stages, so nothing was "retrained"
    assert run.state.message.startswith(f"{NOT_RETRAINED}; data.dvc committed\n")
    data_commit = _assert_committed_data_then_record(served, before)
    new_md5 = git_dvc.data_md5_at(served.repo, data_commit)
    runs = [r for r in served.stage_runs(str(pipeline.id)) if r.info.status == "FINISHED"]
    assert [r.data.tags[tags.STAGE] for r in runs] == [s for s in stages if s != "base_model"]
    for stage_run in runs:
        assert stage_run.data.tags[tags.DATA_MD5] == new_md5
        assert stage_run.data.tags[tags.GIT_COMMIT] == data_commit
        assert stage_run.data.tags[tags.GIT_DIRTY] == "false"

    again = served.wait(served.deployment_run("recfound-retrain/data-change"))
    assert again.state.message.startswith("unchanged")  # ran once, not again
    assert _subflow_runs(served, str(again.id)) == []


def test_data_change_deployment_does_not_commit_over_uncommitted_edits(
    served: Served, two_train_runs
) -> None:
    repo = served.repo
    head = git_dvc.git_commit(repo)
    (repo / "NOTES.md").write_text("work in progress\n")
    run, _, _ = _retrain_after_a_data_change(served, 7, _stages_up_to("build"))
    assert run.state.message.startswith(f"{NOT_RETRAINED}; data.dvc not committed (tree not clean)")
    assert git_dvc.git_commit(repo) == head
    assert {"NOTES.md", "data.dvc"} <= set(git_dvc.git_dirty_paths(repo))
    # the user tidies up: commit the edit together with the data it trained on
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "notes and data")


@pytest.mark.slow
def test_data_change_deployment_retrains_the_whole_pipeline_to_a_traced_model(
    served: Served, two_train_runs
) -> None:
    run, pipeline, before = _retrain_after_a_data_change(served, 11, pipeline_stages())
    assert run.state.message.startswith(f"{RETRAINED}; data.dvc committed\n")
    data_commit = _assert_committed_data_then_record(served, before)
    runs = [r for r in served.stage_runs(str(pipeline.id)) if r.info.status == "FINISHED"]
    assert {"build", "train"} <= {r.data.tags[tags.STAGE] for r in runs}
    assert {r.data.tags[tags.GIT_COMMIT] for r in runs} == {data_commit}
    if "evaluate" in pipeline_stages():
        client = served.mlflow()
        name = served.cfg.tracking.registered_model
        latest = max(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
        assert client.get_run(latest.run_id).data.tags[tags.PIPELINE_ID] == str(pipeline.id)
        lineage = _run(
            [str(SCRIPTS / "recfound"), "lineage", f"{name}/{latest.version}", "--strict"],
            served.repo,
        )
        assert "fully traced" in lineage


# ------------------------------------------------ cancellation, crashes and restarts (issue 12)

# Enough steps that training is still going when the tests below stop it.
LONG_TRAIN_STEPS = 100_000
GONE_WITHIN_S = 10


def _pipeline_processes(repo: Path) -> list[str]:
    """`dvc repro` and `recfound stage` processes working in `repo` (live ones, as 'pid cmd')."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if state != "Z" and cwd == str(repo) and ("dvc repro" in cmd or "recfound stage" in cmd):
            found.append(f"{proc.name} {cmd}")
    return found


def _seconds_until_no_pipeline_process(repo: Path, limit_s: float = 60) -> float:
    begun = time.monotonic()
    while _pipeline_processes(repo):
        assert time.monotonic() - begun < limit_s, _pipeline_processes(repo)
        time.sleep(0.5)
    return time.monotonic() - begun


@contextmanager
def _long_training(repo: Path) -> Iterator[None]:
    """params.yaml with a training long enough to be interrupted; restored afterwards."""
    path = repo / "params.yaml"
    original = path.read_text()
    params = yaml.safe_load(original)
    _set(params, "train.steps", LONG_TRAIN_STEPS)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        yield
    finally:
        path.write_text(original)


def _train_runs(served: Served, pipeline_id: str, count: int, timeout_s: float = 240) -> list:
    """The first `count` train stage runs of the pipeline, once the last one is RUNNING."""
    deadline = time.monotonic() + timeout_s
    while True:
        runs = [r for r in served.stage_runs(pipeline_id) if r.data.tags[tags.STAGE] == "train"]
        if len(runs) >= count and runs[count - 1].info.status == "RUNNING":
            return runs[:count]
        assert time.monotonic() < deadline, [(r.info.run_id, r.info.status) for r in runs]
        time.sleep(1)


@pytest.fixture(scope="module")
def killed_then_cancelled(served: Served, two_train_runs) -> dict:
    """A long train run: its stage SIGKILLed (the task's retry starts it again), then the
    flow run cancelled the way a user does; what was seen along the way."""
    if "train" not in pipeline_stages():
        pytest.skip("the pipeline has no train stage")
    seen: dict = {}
    with _long_training(served.repo):
        run_id = served.deployment_run("recfound/train")
        (first,) = _train_runs(served, run_id, 1)
        os.kill(int(first.data.tags[tags.PROCESS_PID]), signal.SIGKILL)
        _, seen["retry"] = _train_runs(served, run_id, 2)
        seen["killed_after_retry"] = served.mlflow().get_run(first.info.run_id).info.status
        _run([str(SCRIPTS / "prefect"), "flow-run", "cancel", run_id], served.repo, served.env)
        seen["gone_after_s"] = _seconds_until_no_pipeline_process(served.repo)
        seen["flow_run"] = served.wait(run_id)
    seen["retry_after_cancel"] = served.mlflow().get_run(seen["retry"].info.run_id).info.status
    return seen


def test_a_sigkilled_stage_run_is_closed_killed_by_the_next_stage_start(
    killed_then_cancelled: dict,
) -> None:
    assert killed_then_cancelled["killed_after_retry"] == "KILLED"


def test_cancelling_a_run_mid_training_stops_dvc_and_the_stage_and_closes_its_run(
    served: Served, killed_then_cancelled: dict
) -> None:
    assert killed_then_cancelled["gone_after_s"] <= GONE_WITHIN_S
    assert killed_then_cancelled["flow_run"].state.is_cancelled()
    assert killed_then_cancelled["retry_after_cancel"] in ("KILLED", "FAILED")


def test_after_a_crash_and_restart_of_serve_the_next_run_is_not_blocked(
    served: Served, killed_then_cancelled: dict
) -> None:
    (deployments,) = [
        pid
        for pid in map(int, _run(["pgrep", "-P", str(served.proc.pid)], served.repo).split())
        if "flows.deployments" in " ".join(processes.command_line(pid))
    ]
    with _long_training(served.repo):
        orphan = served.deployment_run("recfound/train")
        (train,) = _train_runs(served, orphan, 1)
        # the serving process and its flow run die without a word, as in a crash
        os.killpg(deployments, signal.SIGKILL)
        assert _seconds_until_no_pipeline_process(served.repo) <= GONE_WITHIN_S
    served.proc.wait(timeout=120)  # serve stops the rest when a child dies
    start_serve(served, served.log.with_name("serve-restarted.log"))
    with served.client() as client:
        assert client.read_flow_run(orphan).state.is_crashed()
    assert served.mlflow().get_run(train.info.run_id).info.status in ("KILLED", "FAILED")
    after = served.wait(served.deployment_run("recfound/train"))
    assert after.state.is_completed(), after.state


def _flow_run_log(served: Served, flow_run_id: str) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with served.client() as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return "\n".join(entry.message for entry in logs)


def _wait_for(condition, what: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_a_deployment_run_waits_for_a_direct_dvc_repro_and_then_runs(
    served: Served, two_train_runs
) -> None:
    """`dvc repro` run by hand holds the workspace: a deployment run started meanwhile waits,
    saying for whom, and runs once it ends (it used to fail on DVC's "'…' is busy")."""
    if "train" not in pipeline_stages():
        pytest.skip("the pipeline has no train stage")
    params = served.repo / "params.yaml"
    original = params.read_text()
    with _long_training(served.repo), (served.repo.parent / "direct.log").open("wb") as log:
        direct = subprocess.Popen(
            [str(SCRIPTS / "dvc"), "repro", "train"],
            cwd=served.repo,
            env=served.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        # the stage takes its lock once it has read params.yaml (the long training)
        lock = served.repo / served.cfg.paths.stage_lock
        _wait_for(
            lambda: getattr(locks.read_holder(lock), "owner", "") == "stage train",
            "the direct train stage",
        )
    # params are back as they were; the direct stage has read its (long) settings already
    assert params.read_text() == original
    run_id = served.deployment_run("recfound/train")
    _wait_for(lambda: "waiting for the workspace" in _flow_run_log(served, run_id), "a wait")
    time.sleep(5)  # well past a retry's delay: the run must still be waiting, not failing
    with served.client() as client:
        assert client.read_flow_run(run_id).state.is_running()
    waiting = [line for line in _flow_run_log(served, run_id).splitlines() if "waiting for" in line]
    assert "held by stage train (pid " in waiting[0] or "`dvc repro train`" in waiting[0]
    os.killpg(direct.pid, signal.SIGTERM)  # the direct run ends (as if it had finished)
    direct.wait(timeout=60)
    after = served.wait(run_id)
    assert after.state.is_completed(), after.state
    assert "the workspace is this run's now" in _flow_run_log(served, run_id)


def test_sigkill_of_serve_mid_run_leaves_no_orphan_and_a_restart_runs_again(
    served: Served, two_train_runs
) -> None:
    """serve killed outright: its children (and the flow run's stage) end with it; a restart
    finds the run truly dead, marks it Crashed, and serves new runs on the same ports."""
    record = json.loads((served.repo / ".prefect" / "serve.json").read_text())
    groups = [child["pid"] for child in record["children"]]
    assert len(groups) == 3
    with _long_training(served.repo):
        orphan = served.deployment_run("recfound/train")
        (train,) = _train_runs(served, orphan, 1)
        os.killpg(served.proc.pid, signal.SIGKILL)  # serve's own group: serve alone
        served.proc.wait()
        no_trainer_s = _seconds_until_no_pipeline_process(served.repo)
    begun = time.monotonic()
    _wait_for(lambda: not any(map(processes.group_alive, groups)), "serve's children", 60)
    no_child_s = no_trainer_s + time.monotonic() - begun
    print(f"SIGKILL of serve: no trainer after {no_trainer_s:.1f} s, ", end="")
    print(f"no child of serve after {no_child_s:.1f} s")
    assert no_trainer_s <= GONE_WITHIN_S
    start_serve(served, served.log.with_name("serve-after-sigkill.log"))
    with served.client() as client:
        state = client.read_flow_run(orphan).state
    assert state.is_crashed() or state.is_cancelled(), state
    assert served.mlflow().get_run(train.info.run_id).info.status in ("KILLED", "FAILED")
    after = served.wait(served.deployment_run("recfound/train"))
    assert after.state.is_completed(), after.state


def test_serve_refuses_to_start_while_another_serve_of_the_repository_runs(
    served: Served, two_train_runs
) -> None:
    done = subprocess.run(
        [str(SCRIPTS / "recfound"), "serve"],
        cwd=served.repo,
        env=served.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert f"recfound serve already runs in {served.repo} (pid {served.proc.pid}" in done.stderr
    assert served.proc.poll() is None  # the running one is untouched


def test_ctrl_c_stops_every_process_recfound_serve_started(served: Served, two_train_runs) -> None:
    table = [line.split() for line in _run(["ps", "-eo", "pid,ppid"], served.repo).splitlines()[1:]]
    # each service runs in its own process group, led by a direct child of `recfound serve`
    groups = [int(pid) for pid, ppid in table if int(ppid) == served.proc.pid]
    assert len(groups) == 3  # Prefect server, MLflow UI, deployments
    os.killpg(served.proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
    assert served.proc.wait(timeout=120) == 0
    for group in groups:
        with pytest.raises(ProcessLookupError):
            os.killpg(group, 0)


def test_serve_refuses_to_start_outside_a_repository(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(SCRIPTS / "recfound"), "serve", "--params", str(ROOT / "params.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert f"{tmp_path}: no dvc.yaml here" in done.stderr
