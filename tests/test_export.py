"""Per-task collapse: TMoLE forward == merged model == PEFT-loaded exported LoRA, for each task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from torch import nn
from transformers import AutoModelForCausalLM

from recfound.config import Config, ModelConfig
from recfound.model.adapters import Adapter, attach_adapter
from recfound.model.export import (
    EXPORT_INDEX_FILE,
    TASK_INFO_FILE,
    export_all_tasks,
    export_task_lora,
    merge_task_into_base,
    task_deltas,
)
from recfound.model.tmole import TMoLELinear, expert_group_sizes
from recfound.tasks import NUM_TASKS, TASKS, task_by_code

# Collapsing reorders float32 sums (x·(W + BA) vs W·x + B·(A·x)); beyond this is a real error.
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


@pytest.fixture
def model_cfg(default_config: Config) -> ModelConfig:
    tmole = default_config.model.tmole.model_copy(update={"task_embedding_dim": 16})
    return default_config.model.model_copy(update={"tmole": tmole})


def fresh_model(model_dir: Path) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def trained_looking_adapter(model: nn.Module, cfg: ModelConfig, seed: int = 0) -> Adapter:
    """An attached adapter whose B, routers and task table are random, as after training."""
    adapter = attach_adapter(model, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in adapter.trainable_parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2)
    return adapter


def tokens(batch: int = 2) -> torch.Tensor:
    return torch.randint(3, 300, (batch, 11), generator=torch.Generator().manual_seed(1))


def test_merged_model_and_exported_lora_reproduce_the_tmole_forward_for_every_task(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path
) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = trained_looking_adapter(model, model_cfg)
    x = tokens()
    for task in TASKS:
        with torch.no_grad(), adapter.route(torch.tensor([task.id])):
            routed = model(x).logits
        merged = merge_task_into_base(model, adapter, task.id)
        export_dir = export_task_lora(adapter, task.id, tmp_path / task.code, str(tiny_model_dir))
        peft_model = PeftModel.from_pretrained(fresh_model(tiny_model_dir), export_dir).eval()
        with torch.no_grad():
            torch.testing.assert_close(merged(x).logits, routed, **TOLERANCE)
            torch.testing.assert_close(peft_model(x).logits, routed, **TOLERANCE)


def test_uneven_expert_groups_export_exactly_with_each_kinds_rank(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path
) -> None:
    # 1 embedding-only, 2 shared, 3 generative-only: the two kinds' spans differ in place and size
    tmole = model_cfg.tmole.model_copy(
        update={"experts_embedding": 1, "experts_shared": 2, "experts_generative": 3}
    )
    cfg = model_cfg.model_copy(update={"tmole": tmole})
    model = fresh_model(tiny_model_dir)
    adapter = trained_looking_adapter(model, cfg)
    x = tokens()
    for code, experts in (("U2I", 1 + 2), ("SR", 2 + 3)):
        task = task_by_code(code)
        with torch.no_grad(), adapter.route(torch.tensor([task.id])):
            routed = model(x).logits
        assert {d.a.shape[0] for d in task_deltas(adapter, task.id).values()} == {
            experts * tmole.rank
        }
        export_dir = export_task_lora(adapter, task.id, tmp_path / code, str(tiny_model_dir))
        peft_model = PeftModel.from_pretrained(fresh_model(tiny_model_dir), export_dir).eval()
        with torch.no_grad():
            torch.testing.assert_close(peft_model(x).logits, routed, **TOLERANCE)


def test_tasks_collapse_to_different_deltas(tiny_model_dir: Path, model_cfg: ModelConfig) -> None:
    adapter = trained_looking_adapter(fresh_model(tiny_model_dir), model_cfg)
    name = "model.layers.0.mlp.down_proj"
    deltas = [task_deltas(adapter, t)[name].weight_delta() for t in (0, 1, 3)]
    assert not torch.allclose(deltas[0], deltas[1])
    assert not torch.allclose(deltas[0], deltas[2])


def test_merged_model_is_a_plain_model_and_leaves_the_adapted_one_intact(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = trained_looking_adapter(model, model_cfg)
    x = tokens()
    with torch.no_grad(), adapter.route(torch.tensor([4])):
        before = model(x).logits
    merged = merge_task_into_base(model, adapter, 4)

    plain = fresh_model(tiny_model_dir)
    assert [n for n, _ in merged.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert type(merged.model.layers[0].self_attn.q_proj) is nn.Linear
    assert not hasattr(merged, "tmole_routing")
    # The original still carries the adapter and answers as before.
    assert isinstance(model.model.layers[0].self_attn.q_proj, TMoLELinear)
    with torch.no_grad(), adapter.route(torch.tensor([4])):
        torch.testing.assert_close(model(x).logits, before)


def test_in_place_merge_needs_no_second_copy(tiny_model_dir: Path, model_cfg: ModelConfig) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = trained_looking_adapter(model, model_cfg)
    x = tokens()
    with torch.no_grad(), adapter.route(torch.tensor([7])):
        routed = model(x).logits
    merged = merge_task_into_base(model, adapter, 7, inplace=True)
    assert merged is model
    with torch.no_grad():
        torch.testing.assert_close(merged(x).logits, routed, **TOLERANCE)


def test_exported_lora_has_the_rank_of_the_tasks_kind_experts_and_scaling_one(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path
) -> None:
    adapter = trained_looking_adapter(fresh_model(tiny_model_dir), model_cfg)
    out = export_task_lora(adapter, 5, tmp_path / "PRP", "my/base")
    config = json.loads((out / "adapter_config.json").read_text())
    _, n_shared, n_gen = expert_group_sizes(model_cfg.tmole)
    # PRP is generative: its embedding-only experts have gate 0 and are left out
    kind_rank = (n_shared + n_gen) * model_cfg.tmole.rank
    assert kind_rank < sum(expert_group_sizes(model_cfg.tmole)) * model_cfg.tmole.rank
    assert config["peft_type"] == "LORA"
    assert config["r"] == config["lora_alpha"] == kind_rank
    weights = load_file(out / "adapter_model.safetensors")
    assert {w.shape[0] for k, w in weights.items() if k.endswith("lora_A.weight")} == {kind_rank}
    assert config["base_model_name_or_path"] == "my/base"
    info = json.loads((out / TASK_INFO_FILE).read_text())
    assert info == {"task_id": 5, "code": "PRP", "kind": "generative", "source_adapter": "tmole"}


def test_export_all_tasks_writes_one_peft_adapter_per_task(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path
) -> None:
    adapter = trained_looking_adapter(fresh_model(tiny_model_dir), model_cfg)
    written = export_all_tasks(adapter, tmp_path / "tasks", str(tiny_model_dir))
    assert list(written) == [t.code for t in TASKS]
    assert sorted(p.name for p in (tmp_path / "tasks").iterdir() if p.is_dir()) == sorted(written)
    for directory in written.values():
        assert (directory / "adapter_config.json").is_file()
        assert (directory / "adapter_model.safetensors").is_file()
    index = json.loads((tmp_path / "tasks" / EXPORT_INDEX_FILE).read_text())
    assert index == {"tasks": [t.code for t in TASKS], "source_adapter": "tmole"}


def test_export_of_a_task_subset_writes_and_records_only_those_tasks(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path
) -> None:
    adapter = trained_looking_adapter(fresh_model(tiny_model_dir), model_cfg)
    subset = [task_by_code(code) for code in ("PM", "U2I", "SR")]  # any order in
    written = export_all_tasks(adapter, tmp_path / "tasks", str(tiny_model_dir), subset)
    assert list(written) == ["U2I", "SR", "PM"]  # id order out
    assert {p.name for p in (tmp_path / "tasks").iterdir()} == {*written, EXPORT_INDEX_FILE}
    index = json.loads((tmp_path / "tasks" / EXPORT_INDEX_FILE).read_text())
    assert index["tasks"] == ["U2I", "SR", "PM"]
    info = json.loads((written["PM"] / TASK_INFO_FILE).read_text())
    assert info["code"] == "PM" and info["task_id"] == task_by_code("PM").id
    with pytest.raises(ValueError, match="no task"):
        export_all_tasks(adapter, tmp_path / "none", str(tiny_model_dir), [])


def test_lora_mode_exports_the_lora_itself_and_merges_it_for_every_task(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path
) -> None:
    lora_cfg = model_cfg.model_copy(update={"adapter": "lora"})
    model = fresh_model(tiny_model_dir)
    adapter = trained_looking_adapter(model, lora_cfg)
    x = tokens()
    with torch.no_grad():
        adapted = model(x).logits
    written = export_all_tasks(adapter, tmp_path / "tasks", str(tiny_model_dir))
    saved_config = json.loads((written["U2I"] / "adapter_config.json").read_text())
    assert (saved_config["r"], saved_config["lora_alpha"]) == (
        lora_cfg.lora.rank,
        lora_cfg.lora.alpha,
    )
    for task_id in (0, 3, NUM_TASKS - 1):
        merged = merge_task_into_base(model, adapter, task_id)
        code = TASKS[task_id].code
        peft_model = PeftModel.from_pretrained(fresh_model(tiny_model_dir), written[code]).eval()
        with torch.no_grad():
            torch.testing.assert_close(merged(x).logits, adapted, **TOLERANCE)
            torch.testing.assert_close(peft_model(x).logits, adapted, **TOLERANCE)


def test_unknown_task_id_is_refused(tiny_model_dir: Path, model_cfg: ModelConfig) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = trained_looking_adapter(model, model_cfg)
    with pytest.raises(ValueError, match="0..12"):
        merge_task_into_base(model, adapter, NUM_TASKS)
