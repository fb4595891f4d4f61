"""The training stage on the tiny model: outputs, resume after a kill, two processes."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from recfound.config import Config
from recfound.data.unified import load_unified
from recfound.model.adapters import attach_adapter
from recfound.model.inference import load_recfound
from recfound.model.losses import (
    info_nce,
    info_nce_per_query,
    per_sample_lm_loss,
    response_positions,
)
from recfound.tasks import TASKS, task_by_code
from recfound.train import checkpoint as ckpt
from recfound.train.batches import BatchEncoder, validation_rows
from recfound.train.objective import MultiTaskObjective, validation_losses
from recfound.train.smoke import write_synthetic_unified
from recfound.train.stage import train

ADAPTER_WEIGHTS = "adapter_model.safetensors"


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def unified_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unified") / "unified"
    return write_synthetic_unified(out, train_per_task=8, validation_per_task=2, test_per_task=1)


def make_config(
    root: Path, model_dir: Path, unified: Path, model: dict | None = None, **train
) -> Config:
    """A config whose outputs all live under `root`, sized for the tiny model; `model`: the
    `model` section's keys to set."""
    return Config.model_validate(
        {
            "model": model or {},
            "paths": {
                "base_model": str(model_dir),
                "unified": str(unified),
                "checkpoints": str(root / "checkpoints"),
                "adapter": str(root / "adapter"),
                "train_metrics": str(root / "metrics"),
            },
            "train": {
                "steps": 8,
                "save_every": 4,
                "warmup_steps": 1,
                "embedding_per_batch": 2,  # two queries: the step log's n/<task> below
                **train,
            },
            "s2sched": {"warmup_steps": 2, "update_interval": 2, "val_batch_size": 2},
            "tracking": {
                "uri": f"sqlite:///{root}/mlflow.db",
                "artifact_root": str(root / "mlruns"),
            },
        }
    )


def write_params(cfg: Config, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json", by_alias=True)), encoding="utf-8")
    return path


# The stage function itself, without the CLI's MLflow wrapper (tracking is tested elsewhere).
STAGE_SCRIPT = """
import sys
from recfound.config import load_config
from recfound.train.stage import run
run(load_config(sys.argv[1]))
"""


def stage_script(directory: Path) -> Path:
    script = directory / "run_train_stage.py"
    script.write_text(STAGE_SCRIPT, encoding="utf-8")
    return script


def single_thread_env() -> dict[str, str]:
    # Same intra-op threading in every process, so float results can be compared exactly.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def adapter_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(adapter_dir / ADAPTER_WEIGHTS)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir, unified_dir):
    root = tmp_path_factory.mktemp("run")
    cfg = make_config(root, tiny_model_dir, unified_dir, steps=12, save_every=4)
    outcome = train(cfg)
    return cfg, outcome


def assert_resumes_bit_exactly_from_step_2(cfg: Config, later_steps: tuple[int, ...]) -> str:
    """After a finished run: drop the checkpoints of `later_steps` and the adapter (as if
    killed after step 2), train again, and check it resumes at 2 and ends bit-identical, with
    the same steps.jsonl (returned)."""
    full = adapter_tensors(cfg.paths.adapter)
    log = (cfg.paths.train_metrics / "steps.jsonl").read_text()
    for step in later_steps:
        shutil.rmtree(ckpt.checkpoint_dir(cfg.paths.checkpoints, step))
    shutil.rmtree(cfg.paths.adapter)
    outcome = train(cfg)
    assert outcome.resumed_from == 2
    resumed = adapter_tensors(cfg.paths.adapter)
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert (cfg.paths.train_metrics / "steps.jsonl").read_text() == log
    return log


def test_training_writes_numbered_checkpoints_and_the_final_adapter(trained):
    cfg, _ = trained
    steps = [step for step, _ in ckpt.list_checkpoints(cfg.paths.checkpoints)]
    assert steps == [0, 4, 8, 12]
    final = adapter_tensors(cfg.paths.adapter)
    last = adapter_tensors(cfg.paths.checkpoints / "step-000012" / "adapter")
    assert final.keys() == last.keys()
    assert all(torch.equal(final[k], last[k]) for k in final)


def test_initial_checkpoint_holds_the_untrained_adapter(trained):
    cfg, _ = trained
    initial = adapter_tensors(cfg.paths.checkpoints / "step-000000" / "adapter")
    final = adapter_tensors(cfg.paths.adapter)
    ups = [k for k in initial if k.endswith("lora_b")]
    assert ups and all(not initial[k].any() for k in ups)  # B starts at zero
    assert any(final[k].any() for k in ups)


def test_final_adapter_loads_for_inference(trained, tiny_model_dir):
    cfg, _ = trained
    model, _ = load_recfound(tiny_model_dir, cfg.paths.adapter, cfg, device="cpu")
    assert model.adapter is not None


def test_step_log_has_losses_lr_and_ratios_for_every_step(trained):
    cfg, _ = trained
    lines = (cfg.paths.train_metrics / "steps.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == list(range(1, 13))
    for r in records:
        assert {"loss", "loss_emb", "loss_gen", "lr"} <= r.keys()
        assert r["loss"] == pytest.approx(r["loss_emb"] + r["loss_gen"], rel=1e-5)
        assert any(key.startswith("loss/") for key in r)
        assert sum(r[f"ratio/{code}"] for code in ("U2I", "Q2I", "I2I")) == pytest.approx(1.0)
        assert sum(r[f"n/{code}"] for code in ("U2I", "Q2I", "I2I")) == 2
        assert sum(r[f"n/{t.code}"] for t in TASKS if not t.is_embedding) == 4
    assert records[0]["lr"] == 0.0 and records[1]["lr"] > 0  # warm-up from zero
    assert "val_loss/AG" in records[0] and "val_loss/AG" not in records[1]


def test_plot_csvs_are_long_format_per_task(trained):
    cfg, _ = trained
    with open(cfg.paths.train_metrics / "ratio_per_task.csv") as handle:
        ratios = list(csv.DictReader(handle))
    assert list(ratios[0]) == ["step", "task", "ratio"]
    assert len(ratios) == 12 * len(TASKS)
    with open(cfg.paths.train_metrics / "loss_per_task.csv") as handle:
        losses = list(csv.DictReader(handle))
    assert list(losses[0]) == ["step", "task", "loss"]
    assert {row["task"] for row in losses} <= {t.code for t in TASKS}


def test_training_lowers_the_validation_loss_of_the_tasks(trained):
    """On 2 validation rows per task of the tiny random model, 12 steps lower the total and all
    tasks but at most one: with the default N(0, 1) routers each task trains its own mix of
    experts, and one task's two rows may end above their start (seed 1234: Q2I). The default
    run on the sample improves all 13 (reports/train/val_loss.json)."""
    cfg, outcome = trained
    report = json.loads((cfg.paths.train_metrics / "val_loss.json").read_text())
    assert set(report["tasks"]) == {t.code for t in TASKS}
    improved = [t for t in TASKS if outcome.val_loss_after[t.id] < outcome.val_loss_before[t.id]]
    assert [t.code for t in improved] == [c for c, v in report["tasks"].items() if v["improved"]]
    assert report["all_improved"] == (len(improved) == len(TASKS))
    assert len(improved) >= len(TASKS) - 1, report
    assert sum(outcome.val_loss_after.values()) < sum(outcome.val_loss_before.values())


def test_rerun_of_a_finished_run_changes_nothing(trained):
    cfg, _ = trained
    before = adapter_tensors(cfg.paths.adapter)
    log = (cfg.paths.train_metrics / "steps.jsonl").read_text()
    outcome = train(cfg)
    assert outcome.resumed_from == 12
    after = adapter_tensors(cfg.paths.adapter)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (cfg.paths.train_metrics / "steps.jsonl").read_text() == log


def test_checkpoints_of_another_configuration_are_not_resumed(
    tmp_path, tiny_model_dir, unified_dir
):
    train(make_config(tmp_path, tiny_model_dir, unified_dir, steps=4, save_every=2))
    changed = make_config(tmp_path, tiny_model_dir, unified_dir, steps=2, save_every=2, lr=5e-4)
    outcome = train(changed)
    assert outcome.resumed_from is None
    assert [s for s, _ in ckpt.list_checkpoints(changed.paths.checkpoints)] == [0, 2]


def answers_of_two_tasks(tiny_model_dir: Path, second_answer_end: int):
    """A tiny model and three prompts with answers from position 4: rows 0 and 2 of task 3 (five
    tokens each), row 1 of task 5 ending at `second_answer_end`; whole, and as per-task
    sub-batches the way training runs them."""
    model, _ = load_recfound(tiny_model_dir, None, Config(), device="cpu")
    model.adapter = attach_adapter(model.lm, Config().model)
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (3, 9))
    labels = ids.clone()
    labels[:, :4] = -100
    labels[1, second_answer_end:] = -100
    mask = torch.ones_like(ids)
    tasks = torch.tensor([3, 5, 3])
    split = [
        {"input_ids": ids[rows], "attention_mask": mask[rows], "labels": labels[rows]}
        | {"task_ids": tasks[rows]}
        for rows in ([0, 2], [1])
    ]
    return model, (ids, mask, labels, tasks), split


def test_generative_loss_is_the_token_mean_of_the_whole_batch(tiny_model_dir):
    model, whole_batch, split = answers_of_two_tasks(tiny_model_dir, second_answer_end=7)
    objective = MultiTaskObjective(model, group_size=2, temperature=0.02, gen_factor=0.5)
    out = objective(embedding=None, generative=split)
    whole = model.generative_loss(*whole_batch)
    assert out["loss_gen"] == pytest.approx(whole.item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx(0.5 * whole.item(), rel=1e-5)
    assert out["task_weight"][3] == 2 * 5 and out["task_weight"][5] == 3  # response tokens


def test_sample_reduction_weighs_every_answer_alike_however_long(tiny_model_dir):
    model, whole_batch, split = answers_of_two_tasks(tiny_model_dir, second_answer_end=5)
    objective = MultiTaskObjective(model, 2, 0.02, gen_factor=1.0, gen_reduction="sample")
    out = objective(embedding=None, generative=split)
    each = [model.generative_loss(*(t[[i]] for t in whole_batch)) for i in range(3)]
    assert out["loss_gen"] == pytest.approx(torch.stack(each).mean().item(), rel=1e-5)
    assert out["task_weight"][3] == 2 and out["task_weight"][5] == 1  # samples, not tokens


@pytest.mark.parametrize("reduction", ["token", "sample"])
def test_one_mixed_batch_gives_the_losses_of_per_task_sub_batches(tiny_model_dir, reduction):
    model, (ids, mask, labels, tasks), split = answers_of_two_tasks(tiny_model_dir, 7)
    objective = MultiTaskObjective(model, 2, 0.02, gen_factor=1.0, gen_reduction=reduction)
    mixed = {"input_ids": ids, "attention_mask": mask, "labels": labels, "task_ids": tasks}
    one, per_task = objective(None, [mixed]), objective(None, split)
    assert one["loss_gen"].item() == pytest.approx(per_task["loss_gen"].item(), rel=1e-5)
    torch.testing.assert_close(one["task_weight"], per_task["task_weight"])
    torch.testing.assert_close(one["task_loss_sum"], per_task["task_loss_sum"])


@pytest.mark.parametrize("reduction", ["token", "sample"])
def test_validation_loss_is_the_training_loss_whatever_the_chunking(
    tmp_path, tiny_model_dir, unified_dir, reduction
):
    cfg = make_config(tmp_path, tiny_model_dir, unified_dir, loss_gen_reduction=reduction)
    model, tokenizer = load_recfound(tiny_model_dir, None, cfg, device="cpu")
    torch.manual_seed(0)
    model.adapter = attach_adapter(model.lm, cfg.model)
    objective = MultiTaskObjective.from_config(model, cfg)
    split = load_unified(unified_dir, ("validation",))["validation"]
    encoder = BatchEncoder(split, tokenizer, cfg.train, unified_dir)
    generative = [t.id for t in TASKS if not t.is_embedding]
    rows = validation_rows(split, 2, cfg.seed, generative)
    mixed = validation_losses(objective, encoder, rows, generative, batch_size=3)
    for task in generative:
        alone = validation_losses(objective, encoder, rows, [task], batch_size=1)[task]
        with torch.no_grad():
            out = objective(None, encoder.generative(list(rows[task])))
        training = float(out["task_loss_sum"][task] / out["task_weight"][task])
        assert mixed[task] == pytest.approx(alone, rel=1e-5)
        assert mixed[task] == pytest.approx(training, rel=1e-5)


def test_per_sample_lm_loss_is_each_samples_token_mean_and_zero_without_a_response():
    torch.manual_seed(0)
    logits = torch.randn(3, 6, 11)
    labels = torch.randint(0, 11, (3, 6))
    labels[0, :3] = -100
    labels[2, :] = -100
    per_sample = per_sample_lm_loss(logits[response_positions(labels)], labels)
    expected0 = torch.nn.functional.cross_entropy(logits[0, 2:5], labels[0, 3:])
    expected1 = torch.nn.functional.cross_entropy(logits[1, :5], labels[1, 1:])
    assert per_sample.tolist() == pytest.approx([expected0.item(), expected1.item(), 0.0])


def test_info_nce_is_the_mean_of_the_per_query_losses_in_one_process():
    torch.manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    p = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    per_query = info_nce_per_query(q, p, group_size=2, temperature=0.05)
    assert per_query.shape == (3,)
    assert per_query.mean() == pytest.approx(float(info_nce(q, p, 2, 0.05)), rel=1e-6)


def test_optimizer_state_round_trips_through_safetensors_and_json():
    param = torch.nn.Parameter(torch.randn(4, 3))
    optimizer = torch.optim.AdamW([param], lr=0.1)
    param.grad = torch.randn(4, 3)
    optimizer.step()
    tensors, meta = ckpt.optimizer_to_files(optimizer.state_dict())
    restored = ckpt.optimizer_from_files(tensors, json.loads(json.dumps(meta)))
    fresh = torch.optim.AdamW([torch.nn.Parameter(param.detach().clone())], lr=0.1)
    fresh.load_state_dict(restored)
    for name, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(fresh.state_dict()["state"][0][name], value)


def test_a_grad_cache_run_with_dropout_resumes_to_the_same_weights(
    tmp_path, tiny_model_dir, unified_dir
):
    # Two micro-batches per step, InfoNCE over both (GradCache), adapter dropout on: the cache
    # replays the RNG, the resumed run must still redraw exactly the same masks.
    dropout = {"tmole": {"dropout": 0.1}}
    cfg = make_config(
        tmp_path, tiny_model_dir, unified_dir, dropout, steps=4, save_every=2, grad_accum=2
    )
    assert cfg.train.grad_cache
    train(cfg)
    log = assert_resumes_bit_exactly_from_step_2(cfg, later_steps=(4,))
    records = [json.loads(line) for line in log.splitlines()]
    assert all(r["loss_emb"] > 0 and sum(r[f"n/{c}"] for c in ("U2I", "Q2I", "I2I")) == 2 * 2
               for r in records)  # fmt: skip


def _wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"training ended (rc={process.returncode}) before {path} appeared")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.005)


def test_run_killed_mid_training_resumes_to_the_same_weights(tmp_path, tiny_model_dir, unified_dir):
    steps = dict(steps=16, save_every=4)
    killed = make_config(tmp_path / "killed", tiny_model_dir, unified_dir, **steps)
    params = write_params(killed, tmp_path / "killed.yaml")
    command = [sys.executable, str(stage_script(tmp_path)), str(params)]
    env = single_thread_env()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for(killed.paths.checkpoints / "step-000004", process, timeout=120)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not killed.paths.adapter.exists()  # killed before the end
    assert ckpt.latest_checkpoint(killed.paths.checkpoints)[0] < 16

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout

    reference = make_config(tmp_path / "reference", tiny_model_dir, unified_dir, **steps)
    train(reference)  # uninterrupted, in this process (one thread, like the subprocess)

    got, want = adapter_tensors(killed.paths.adapter), adapter_tensors(reference.paths.adapter)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    got_log = (killed.paths.train_metrics / "steps.jsonl").read_text()
    assert got_log == (reference.paths.train_metrics / "steps.jsonl").read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_on_two_processes(tmp_path: Path, cfg: Config) -> None:
    """The train stage under torchrun (what `accelerate launch --multi_gpu` runs) with two
    ranks; ACCELERATE_USE_CPU makes accelerate form a gloo process group on CPU."""
    params = write_params(cfg, tmp_path / "params.yaml")
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
        str(stage_script(tmp_path)), str(params),
    ]  # fmt: skip
    env = {**single_thread_env(), "ACCELERATE_USE_CPU": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def test_two_processes_take_identical_scheduling_decisions(tmp_path, tiny_model_dir, unified_dir):
    cfg = make_config(tmp_path, tiny_model_dir, unified_dir, steps=4, save_every=2)
    train_on_two_processes(tmp_path, cfg)
    logs = [
        [json.loads(line) for line in (cfg.paths.train_metrics / "samples" / f"rank-{r}.jsonl")
         .read_text().splitlines()]
        for r in (0, 1)
    ]  # fmt: skip
    assert [r["step"] for r in logs[0]] == [r["step"] for r in logs[1]] == [1, 2, 3, 4]
    for rank0, rank1 in zip(*logs, strict=True):
        assert rank0["counts"] == rank1["counts"]
        assert sum(rank0["counts"].values()) == 2 * (2 + 4)  # both ranks' slots
        assert len(rank0["ids"]) == len(rank1["ids"]) == 2 + 4
        assert not set(rank0["ids"]) & set(rank1["ids"])  # data parallel: different rows
    assert (cfg.paths.adapter / ADAPTER_WEIGHTS).is_file()
    assert [s for s, _ in ckpt.list_checkpoints(cfg.paths.checkpoints)] == [0, 2, 4]


def test_two_processes_train_with_grad_cache(tmp_path, tiny_model_dir, unified_dir):
    # DDP with two micro-batches per step: the cache pass outside DDP, one forward and one
    # backward per micro-batch inside accumulate (no_sync, then one all-reduce).
    cfg = make_config(tmp_path, tiny_model_dir, unified_dir, steps=2, save_every=2, grad_accum=2)
    train_on_two_processes(tmp_path, cfg)
    records = [json.loads(line) for line in (cfg.paths.train_metrics / "steps.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:  # InfoNCE over 2 ranks x 2 micro-batches x 2 queries
        assert record["loss_emb"] > 0
        assert sum(record[f"n/{c}"] for c in ("U2I", "Q2I", "I2I")) == 2 * 2 * 2


# --- a task subset (a user who brings only some sources)


@pytest.fixture(scope="module")
def generative_only_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("subset") / "unified"
    return write_synthetic_unified(
        out, train_per_task=6, validation_per_task=2, test_per_task=1, tasks=("SR", "PM", "AG")
    )


def test_a_subset_run_resumed_from_a_checkpoint_ends_with_the_same_weights(
    tmp_path, tiny_model_dir, generative_only_dir
):
    cfg = make_config(tmp_path, tiny_model_dir, generative_only_dir, steps=6, save_every=2)
    train(cfg)
    assert_resumes_bit_exactly_from_step_2(cfg, later_steps=(4, 6))
    state = ckpt.read_state(ckpt.checkpoint_dir(cfg.paths.checkpoints, 6))
    subset_ids = {str(task_by_code(c).id) for c in ("SR", "PM", "AG")}
    assert set(state["s2sched"]["loss_history"]) == subset_ids


def test_two_processes_train_a_generative_only_subset(
    tmp_path, tiny_model_dir, generative_only_dir
):
    # No embedding task: its experts get no gradient, so DDP must look for unused parameters.
    cfg = make_config(tmp_path, tiny_model_dir, generative_only_dir, steps=2, save_every=2)
    train_on_two_processes(tmp_path, cfg)
    records = [json.loads(line) for line in (cfg.paths.train_metrics / "steps.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2]
    for record in records:  # 2 ranks x 4 generative slots, no embedding part
        assert record["loss_emb"] == 0.0
        assert sum(record[f"n/{c}"] for c in ("SR", "PM", "AG")) == 2 * 4
