"""Model Merge: the merge methods on hand-made tensors, checkpoint selection, the merge stage."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM

from recfound.config import Config
from recfound.data.schema import FEATURES
from recfound.errors import RecFoundError
from recfound.merge import methods
from recfound.merge.methods import merge_state_dicts, slerp
from recfound.merge.select import adapter_dirs, best_steps, explicit_steps, select_checkpoints
from recfound.merge.stage import MERGE_INFO_FILE, read_adapter_weights, run
from recfound.model.adapters import attach_adapter, load_adapter
from recfound.model.export import EXPORT_INDEX_FILE, TASK_INFO_FILE
from recfound.tasks import TASKS, task_by_code
from recfound.train.checkpoint import ADAPTER_DIR, STATE_FILE, checkpoint_dir


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values)


# --- methods on plain tensors

INITIAL = {"w": t(10.0, 10.0, 10.0, 10.0)}


def checkpoint(*task_vector: float) -> dict[str, torch.Tensor]:
    return {"w": INITIAL["w"] + t(*task_vector)}


def test_ties_trims_elects_the_sign_and_averages_only_agreeing_entries():
    # task vectors τ1 = [1, -2, 3, 0.1], τ2 = [2, 1, -1.5, 0.2]
    # trim to density 0.5 (top 2 by |·|): τ1 -> [0, -2, 3, 0], τ2 -> [2, 0, -1.5, 0]
    # elected sign of Σ = [2, -2, 1.5, 0] -> [+, -, +, +]; agreeing entries averaged:
    # [2/1, -2/1, 3/1, 0] -> θ0 + [2, -2, 3, 0]
    ckpts = [checkpoint(1, -2, 3, 0.1), checkpoint(2, 1, -1.5, 0.2)]
    merged = merge_state_dicts(INITIAL, ckpts, "ties", density=0.5)
    torch.testing.assert_close(merged["w"], t(12.0, 8.0, 13.0, 10.0))


def test_ties_at_full_density_is_the_sign_consensus_mean():
    ckpts = [checkpoint(1, -2, 3, 0.1), checkpoint(2, 1, -1.5, 0.2)]
    # signs of Σ = [3, -1, 1.5, 0.3]: τ2 disagrees on entries 1 and 2
    merged = merge_state_dicts(INITIAL, ckpts, "ties", density=1.0)
    torch.testing.assert_close(merged["w"], INITIAL["w"] + t(1.5, -2.0, 3.0, 0.15))


def test_linear_merge_is_the_mean_of_the_checkpoints():
    ckpts = [checkpoint(1, -2, 3, 0), checkpoint(3, 0, -1, 4)]
    merged = merge_state_dicts(INITIAL, ckpts, "linear", density=1.0)
    torch.testing.assert_close(merged["w"], (ckpts[0]["w"] + ckpts[1]["w"]) / 2)


def test_dare_is_reproducible_by_seed_and_rescales_kept_entries():
    big = {"w": torch.zeros(1000)}
    ckpts = [{"w": torch.ones(1000)}]
    first = merge_state_dicts(big, ckpts, "dare_linear", density=0.5, seed=7)["w"]
    again = merge_state_dicts(big, ckpts, "dare_linear", density=0.5, seed=7)["w"]
    other = merge_state_dicts(big, ckpts, "dare_linear", density=0.5, seed=8)["w"]
    assert torch.equal(first, again) and not torch.equal(first, other)
    # kept entries are rescaled by 1/density, dropped ones are 0: the mean is preserved roughly
    assert set(first.unique().tolist()) == {0.0, 2.0}
    assert 0.4 < (first > 0).float().mean().item() < 0.6


def test_dare_does_not_disturb_the_global_random_state():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    merge_state_dicts({"w": torch.zeros(10)}, [{"w": torch.ones(10)}], "dare_ties", 0.5, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_slerp_follows_the_great_circle_between_two_task_vectors():
    v0, v1 = t(1.0, 0.0), t(0.0, 1.0)
    torch.testing.assert_close(slerp(v0, v1, 0.0), v0)
    torch.testing.assert_close(slerp(v0, v1, 1.0), v1)
    half = slerp(v0, v1, 0.5)  # unit norm, unlike the linear midpoint (norm 1/√2)
    torch.testing.assert_close(half, t(math.sqrt(0.5), math.sqrt(0.5)))
    # parallel vectors fall back to linear interpolation
    torch.testing.assert_close(slerp(t(1.0, 1.0), t(2.0, 2.0), 0.5), t(1.5, 1.5))


def test_slerp_merge_needs_exactly_two_checkpoints():
    with pytest.raises(ValueError, match="exactly two"):
        merge_state_dicts(INITIAL, [checkpoint(1, 1, 1, 1)] * 3, "slerp", density=1.0)


def test_merge_keeps_each_tensors_dtype():
    initial = {"w": torch.zeros(4, dtype=torch.bfloat16)}
    ckpts = [{"w": torch.ones(4, dtype=torch.bfloat16)}] * 2
    assert merge_state_dicts(initial, ckpts, "ties", 1.0)["w"].dtype == torch.bfloat16


def test_checkpoints_that_do_not_match_the_initial_adapter_are_rejected():
    with pytest.raises(ValueError, match="missing"):
        merge_state_dicts({"a": t(1.0), "b": t(1.0)}, [{"a": t(2.0)}], "linear", 1.0)
    with pytest.raises(ValueError, match="shape"):
        merge_state_dicts({"a": t(1.0)}, [{"a": t(1.0, 2.0)}], "linear", 1.0)


def test_non_float_tensors_are_copied_and_must_agree():
    initial = {"w": t(0.0), "mask": torch.tensor([True, False])}
    same = {"w": t(1.0), "mask": torch.tensor([True, False])}
    assert torch.equal(merge_state_dicts(initial, [same], "linear", 1.0)["mask"], initial["mask"])
    changed = {"w": t(1.0), "mask": torch.tensor([True, True])}
    with pytest.raises(ValueError, match="mask"):
        merge_state_dicts(initial, [changed], "linear", 1.0)


def test_every_configured_method_is_implemented():
    from typing import get_args

    from recfound.config import MergeConfig

    assert set(get_args(MergeConfig.model_fields["method"].annotation)) == set(methods.METHODS)


# --- selection


def test_best_steps_picks_the_lowest_validation_loss_per_task_and_skips_nan():
    losses = {
        16: {"U2I": 1.0, "SR": 2.0, "PM": float("nan")},
        32: {"U2I": 0.5, "SR": 2.5, "PM": float("nan")},
    }
    assert best_steps(losses) == {"U2I": 32, "SR": 16}
    assert best_steps(losses, [task_by_code("SR")]) == {"SR": 16}  # the task set's only


# --- a tiny run on disk: checkpoints, unified dataset, config

LETTERS = [chr(ord("A") + i) for i in range(20)]


def unified_row(task_code: str, row_id: str, **fields: Any) -> dict[str, Any]:
    task = next(task for task in TASKS if task.code == task_code)
    row = {
        name: ([] if isinstance(feature, datasets.Sequence) else "")
        for name, feature in FEATURES.items()
    }
    row.update(id=row_id, task_id=task.id, task=task.code, kind=task.kind.value, **fields)
    return row


def tiny_unified_split(tag: str) -> list[dict[str, Any]]:
    """A U2I, an SR and a PM row; `tag` makes each split's text distinguishable."""
    return [
        unified_row(
            "U2I",
            f"{tag}-u2i",
            instruction="Represent the user history for retrieving the next item",
            input=f"{tag}: shoes, socks",
            positives=["running jacket"],
            positive_ids=["i1"],
            negatives=["red cotton shirt", "blue cap"],
            negative_ids=["i2", "i3"],
        ),
        unified_row(
            "SR",
            f"{tag}-sr",
            instruction="Which item comes next? Answer with the letter.",
            input=f"{tag}: history shoes. " + " ".join(f"{x}. item {x}" for x in LETTERS),
            output="B",
            options=LETTERS,
            option_ids=[f"i{i}" for i in range(20)],
        ),
        unified_row(
            "PM",
            f"{tag}-pm",
            instruction="Same product? yes or no",
            input=f"{tag}: Acme shirt | Acme cotton shirt",
            output="yes",
            options=["yes", "no"],
        ),
    ]


def write_unified(path: Path) -> Path:
    dd = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(tiny_unified_split(split), features=FEATURES)
            for split in ("train", "validation", "test")
        }
    )
    dd.save_to_disk(str(path))
    return path


def make_config(default_config: Config, tmp_path: Path, base: Path, **merge: Any) -> Config:
    raw = default_config.model_dump(by_alias=True)
    raw["paths"].update(
        base_model=base,
        unified=tmp_path / "unified",
        checkpoints=tmp_path / "checkpoints",
        merged=tmp_path / "merged",
    )
    raw["model"]["tmole"]["task_embedding_dim"] = 16
    raw["merge"].update(merge)
    return Config.model_validate(raw)


def write_checkpoints(cfg: Config, steps: list[int]) -> dict[int, dict[str, torch.Tensor]]:
    """Checkpoints as training lays them out; each step's adapter moves further from step 0."""
    model = AutoModelForCausalLM.from_pretrained(cfg.paths.base_model)
    adapter = attach_adapter(model, cfg.model)
    initial = {k: v.clone() for k, v in adapter.adapter_state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    states = {}
    for step in steps:
        state = {
            k: v + 0.01 * step * torch.randn(v.shape, generator=gen) for k, v in initial.items()
        }
        adapter.load_adapter_state_dict(state)
        out = checkpoint_dir(cfg.paths.checkpoints, step)
        adapter.save(out / ADAPTER_DIR)
        (out / STATE_FILE).write_text(json.dumps({"step": step}), encoding="utf-8")
        states[step] = state
    return states


@pytest.fixture
def run_cfg(default_config: Config, tmp_path: Path, tiny_model_dir: Path) -> Config:
    """The default params, but merging every checkpoint (the tests below rely on `all`)."""
    cfg = make_config(default_config, tmp_path, tiny_model_dir, checkpoints="all")
    write_unified(cfg.paths.unified)
    write_checkpoints(cfg, [0, 2, 4])
    return cfg


def test_selection_all_takes_every_trained_checkpoint(run_cfg: Config):
    assert select_checkpoints(run_cfg, adapter_dirs(run_cfg.paths.checkpoints)).steps == [2, 4]


def test_explicit_selection_must_name_trained_steps(run_cfg: Config):
    cfg = run_cfg.model_copy(
        update={"merge": run_cfg.merge.model_copy(update={"checkpoints": [4]})}
    )
    assert select_checkpoints(cfg, adapter_dirs(cfg.paths.checkpoints)).steps == [4]
    bad = run_cfg.model_copy(
        update={"merge": run_cfg.merge.model_copy(update={"checkpoints": [3]})}
    )
    with pytest.raises(RecFoundError, match=r"\[3\]"):
        select_checkpoints(bad, adapter_dirs(bad.paths.checkpoints))


def test_negative_steps_count_from_the_newest_trained_checkpoint():
    where = Path("checkpoints")
    assert explicit_steps([-2, -1], [16, 32, 48], where) == [32, 48]
    assert explicit_steps([-1, 48, 16], [16, 32, 48], where) == [16, 48]
    with pytest.raises(RecFoundError, match=r"\[-4\] from the end.*only 3 trained"):
        explicit_steps([-4], [16, 32, 48], where)


def test_selection_needs_the_initial_checkpoint(
    default_config: Config, tmp_path: Path, tiny_model_dir: Path
):
    cfg = make_config(default_config, tmp_path, tiny_model_dir)
    write_checkpoints(cfg, [2])
    with pytest.raises(RecFoundError, match="step-000000"):
        adapter_dirs(cfg.paths.checkpoints)


def test_best_per_task_reads_the_validation_split_and_never_the_test_split(
    run_cfg: Config, monkeypatch: pytest.MonkeyPatch
):
    accessed: list[str] = []
    original = datasets.DatasetDict.__getitem__

    def recording_getitem(self, key):
        accessed.append(key)
        return original(self, key)

    monkeypatch.setattr(datasets.DatasetDict, "__getitem__", recording_getitem)
    cfg = run_cfg.model_copy(
        update={"merge": run_cfg.merge.model_copy(update={"checkpoints": "best_per_task"})}
    )
    selection = select_checkpoints(cfg, adapter_dirs(cfg.paths.checkpoints))
    # train is read for the task set (which tasks have training rows), never test
    assert "validation" in accessed and "test" not in accessed
    assert set(selection.validation_losses) == {2, 4}
    assert set(selection.best_step_per_task) == {"U2I", "SR", "PM"}
    assert set(selection.steps) == set(selection.best_step_per_task.values())


def test_merge_stage_writes_the_merged_adapter_task_exports_and_record(run_cfg: Config, capsys):
    run(run_cfg)
    merged_dir = run_cfg.paths.merged
    expected = merge_state_dicts(
        read_adapter_weights(checkpoint_dir(run_cfg.paths.checkpoints, 0) / ADAPTER_DIR),
        [
            read_adapter_weights(checkpoint_dir(run_cfg.paths.checkpoints, s) / ADAPTER_DIR)
            for s in (2, 4)
        ],
        "ties",
        run_cfg.merge.density,
    )
    written = read_adapter_weights(merged_dir / "adapter")
    assert written.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(written[name], expected[name])
    # the task table and the routers take part in the merge
    assert any("task_embedding" in name for name in written)
    assert any("router" in name for name in written)
    # it loads as an adapter, and every task of the task set (U2I, SR, PM: the tasks with
    # training rows) has its PEFT LoRA export; the others have none
    load_adapter(
        AutoModelForCausalLM.from_pretrained(run_cfg.paths.base_model), merged_dir / "adapter"
    )
    task_set = ["U2I", "SR", "PM"]
    for code in task_set:
        info = json.loads((merged_dir / "tasks" / code / TASK_INFO_FILE).read_text())
        assert info["code"] == code
    exported = sorted(p.name for p in (merged_dir / "tasks").iterdir() if p.is_dir())
    assert exported == sorted(task_set)
    index = json.loads((merged_dir / "tasks" / EXPORT_INDEX_FILE).read_text())
    assert index["tasks"] == task_set
    record = json.loads((merged_dir / MERGE_INFO_FILE).read_text())
    assert record["checkpoints"] == [2, 4] and record["method"] == "ties"
    assert record["tasks"] == task_set
    assert str(merged_dir) in capsys.readouterr().out


def test_a_failed_merge_leaves_the_previous_output_intact(run_cfg: Config):
    run(run_cfg)
    before = read_adapter_weights(run_cfg.paths.merged / "adapter")
    slerp_of_two = run_cfg.model_copy(
        update={"merge": run_cfg.merge.model_copy(update={"method": "slerp", "checkpoints": [2]})}
    )
    with pytest.raises(RecFoundError, match="exactly two"):
        run(slerp_of_two)
    after = read_adapter_weights(run_cfg.paths.merged / "adapter")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


# --- no leakage: training never reads the test split

CANARY = "TESTSPLITCANARY "


def test_training_never_reads_the_test_split(
    default_config: Config, tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    from recfound.model import prompts
    from recfound.train.smoke import synthetic_unified
    from recfound.train.stage import run as train

    dataset = synthetic_unified(train_per_task=2, validation_per_task=1, test_per_task=1)
    dataset["test"] = dataset["test"].map(
        lambda r: {
            "input": CANARY + r["input"],
            "output": CANARY + r["output"],
            "positives": [CANARY + p for p in r["positives"]],
            "negatives": [CANARY + n for n in r["negatives"]],
        }
    )
    cfg = make_config(default_config, tmp_path, tiny_model_dir)
    dataset.save_to_disk(str(cfg.paths.unified))
    raw = cfg.model_dump(by_alias=True)
    raw["paths"].update(adapter=tmp_path / "adapter", train_metrics=tmp_path / "train")
    raw["train"].update(steps=1, save_every=1, eval_batch_size=8)
    raw["s2sched"].update(warmup_steps=1, update_interval=1)
    cfg = Config.model_validate(raw)

    accessed: list[str] = []
    original_getitem = datasets.DatasetDict.__getitem__

    def recording_getitem(self, key):
        accessed.append(key)
        return original_getitem(self, key)

    encoded: list[str] = []

    def recording(encode):
        def wrapper(tokenizer, instruction, text, *args, **kwargs):
            encoded.extend(a for a in (instruction, text, *args) if isinstance(a, str))
            return encode(tokenizer, instruction, text, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(datasets.DatasetDict, "__getitem__", recording_getitem)
    monkeypatch.setattr(prompts, "encode_generative", recording(prompts.encode_generative))
    monkeypatch.setattr(prompts, "encode_embedding", recording(prompts.encode_embedding))
    train(cfg)

    assert {"train", "validation"} <= set(accessed) and "test" not in accessed
    assert encoded, "training encoded no text: the recording hooks are not on its path"
    assert not any(CANARY.strip() in text for text in encoded)
