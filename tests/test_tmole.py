"""TMoLE layer and the adapter interface (TMoLE or PEFT LoRA): routing, training, save/load."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from safetensors import safe_open
from torch import nn
from transformers import AutoModelForCausalLM

from recfound.config import Config, ModelConfig, TMoLEConfig
from recfound.errors import DataError
from recfound.evaluate.variants import variant_config
from recfound.model.adapters import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_WEIGHTS_FILE,
    Adapter,
    AdapterStateMismatch,
    attach_adapter,
    equal_capacity_lora,
    load_adapter,
    lora_settings,
    routing_weights,
)
from recfound.model.tmole import TaskRouting, TMoLELinear, expert_group_sizes
from recfound.tasks import EMBEDDING_TASK_IDS, GENERATIVE_TASK_IDS, NUM_TASKS

SEQ_LEN = 9
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def model_cfg(default_config: Config) -> ModelConfig:
    # A smaller task table than the default 512 keeps the tiny model's tests quick.
    tmole = default_config.model.tmole.model_copy(update={"task_embedding_dim": 16})
    return default_config.model.model_copy(update={"tmole": tmole})


@pytest.fixture
def lora_cfg(model_cfg: ModelConfig) -> ModelConfig:
    return model_cfg.model_copy(update={"adapter": "lora"})


def fresh_model(model_dir: Path) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def randomize_up_projections(adapter: Adapter, seed: int = 0) -> None:
    """Give B (zero at init) random values so the adapter's contribution is visible."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in adapter.adapter_state_dict().items():
            if "lora_b" in name or "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.2)


def token_batch(batch: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(3, 300, (batch, SEQ_LEN), generator=gen)


def logits_for(model: nn.Module, adapter: Adapter, tokens: torch.Tensor, tasks: list[int]):
    with torch.no_grad(), adapter.route(torch.tensor(tasks)):
        return model(tokens).logits


# ------------------------------------------------------------------------------- the layer


def test_layer_computes_base_plus_gated_sum_of_expert_low_rank_products() -> None:
    torch.manual_seed(0)
    cfg = TMoLEConfig(task_embedding_dim=8, rank=4, alpha=8.0)
    routing = TaskRouting(cfg, torch.float32)
    layer = TMoLELinear(nn.Linear(12, 10), routing, cfg)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(3, 5, 12)
    tasks = torch.tensor([0, 4, 2])
    routing.task_ids = tasks
    got = layer(x)

    # The formula, one expert at a time: y = W x + Σ_e g_e(t) (α/r) B_e A_e x.
    gates = layer.task_gates(tasks)
    r, scaling = cfg.rank, cfg.alpha / cfg.rank
    expected = layer.base(x)
    for e in range(layer.num_experts):
        a_e, b_e = layer.lora_a[e * r : (e + 1) * r], layer.lora_b[:, e * r : (e + 1) * r]
        expected = expected + gates[:, e, None, None] * scaling * (x @ a_e.T @ b_e.T)
    torch.testing.assert_close(got, expected)


def test_layer_stacks_all_experts_in_two_matrices_not_per_expert_modules() -> None:
    cfg = TMoLEConfig(task_embedding_dim=8)
    layer = TMoLELinear(nn.Linear(12, 10), TaskRouting(cfg, torch.float32), cfg)
    n_experts = sum(expert_group_sizes(cfg))
    assert not any(isinstance(m, nn.ModuleList | nn.ModuleDict) for m in layer.modules())
    own = {n for n, _ in layer.named_parameters() if not n.startswith("base.")}
    assert own == {"lora_a", "lora_b", "router.weight", "router.bias"}
    assert layer.lora_a.shape == (n_experts * cfg.rank, 12)
    assert layer.lora_b.shape == (10, n_experts * cfg.rank)
    assert layer.router.out_features == n_experts


def test_layer_outside_route_block_raises_a_clear_error() -> None:
    cfg = TMoLEConfig(task_embedding_dim=8)
    layer = TMoLELinear(nn.Linear(4, 4), TaskRouting(cfg, torch.float32), cfg)
    with pytest.raises(RuntimeError, match="route"):
        layer(torch.randn(1, 2, 4))


def test_config_without_experts_for_one_task_kind_is_rejected() -> None:
    cfg = TMoLEConfig(experts_embedding=0, experts_shared=0, experts_generative=2)
    with pytest.raises(ValueError, match="at least one expert"):
        expert_group_sizes(cfg)


# --------------------------------------------------------------------------------- routing


def test_embedding_tasks_give_zero_weight_to_generative_only_experts(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    adapter = attach_adapter(fresh_model(tiny_model_dir), model_cfg)
    n_emb, n_shared, _ = expert_group_sizes(model_cfg.tmole)
    for task_id in EMBEDDING_TASK_IDS:
        for gates in routing_weights(adapter, task_id).values():
            assert torch.all(gates[n_emb + n_shared :] == 0)
            assert torch.all(gates[: n_emb + n_shared] > 0)


def test_generative_tasks_give_zero_weight_to_embedding_only_experts(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    adapter = attach_adapter(fresh_model(tiny_model_dir), model_cfg)
    n_emb = model_cfg.tmole.experts_embedding
    for task_id in GENERATIVE_TASK_IDS:
        for gates in routing_weights(adapter, task_id).values():
            assert torch.all(gates[:n_emb] == 0)
            assert torch.all(gates[n_emb:] > 0)


def test_routing_weights_sum_to_one_per_layer_for_every_task(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    adapter = attach_adapter(fresh_model(tiny_model_dir), model_cfg)
    for task_id in range(NUM_TASKS):
        weights = routing_weights(adapter, task_id)
        assert len(weights) == 7 * 2  # 7 target projections × 2 layers of the tiny model
        for gates in weights.values():
            torch.testing.assert_close(gates.sum(), torch.tensor(1.0))


def test_mixed_task_batch_equals_each_sample_routed_alone(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = attach_adapter(model, model_cfg)
    randomize_up_projections(adapter)
    tasks = [0, 4, 2, 12, 7]
    tokens = token_batch(len(tasks))
    batched = logits_for(model, adapter, tokens, tasks)
    for i, task in enumerate(tasks):
        alone = logits_for(model, adapter, tokens[i : i + 1], [task])
        torch.testing.assert_close(batched[i : i + 1], alone, rtol=1e-5, atol=1e-5)
    # …and routing matters: the same tokens under another task give other logits.
    other = logits_for(model, adapter, tokens[:1], [5])
    assert not torch.allclose(batched[:1], other, atol=1e-4)


def test_fresh_adapter_leaves_base_outputs_unchanged(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    tokens = token_batch(2)
    with torch.no_grad():
        base_logits = fresh_model(tiny_model_dir)(tokens).logits
    model = fresh_model(tiny_model_dir)
    adapter = attach_adapter(model, model_cfg)
    torch.testing.assert_close(logits_for(model, adapter, tokens, [1, 9]), base_logits)


def test_route_rejects_out_of_range_task_ids(tiny_model_dir: Path, model_cfg: ModelConfig) -> None:
    adapter = attach_adapter(fresh_model(tiny_model_dir), model_cfg)
    with pytest.raises(ValueError, match="0..12"), adapter.route(torch.tensor([0, NUM_TASKS])):
        pass


def test_route_needs_one_task_id_per_sample(tiny_model_dir: Path, model_cfg: ModelConfig) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = attach_adapter(model, model_cfg)
    with pytest.raises(ValueError, match="3 task ids for a batch of 2"):
        logits_for(model, adapter, token_batch(2), [0, 1, 2])


def test_adapter_input_dropout_acts_in_training_only_and_never_on_the_base_path() -> None:
    torch.manual_seed(0)
    cfg = TMoLEConfig(task_embedding_dim=8, dropout=0.5)
    routing = TaskRouting(cfg, torch.float32)
    layer = TMoLELinear(nn.Linear(12, 10), routing, cfg)
    without = TMoLELinear(layer.base, routing, cfg.model_copy(update={"dropout": 0.0}))
    without.load_state_dict(layer.state_dict())
    x = torch.randn(2, 5, 12)
    with routing.routed(torch.tensor([0, 4])):
        with torch.no_grad():
            layer.lora_b.normal_()
            without.lora_b.copy_(layer.lora_b)
        torch.testing.assert_close(layer.eval()(x), without(x))  # eval: no dropout
        trained = layer.train()(x)
        assert not torch.allclose(trained, without(x))
        with torch.no_grad():
            layer.lora_b.zero_()
        torch.testing.assert_close(layer(x), layer.base(x))  # only the adapter input is dropped


def test_router_init_normal_draws_unit_variance_weights_and_default_keeps_linears() -> None:
    torch.manual_seed(0)
    layers = {
        how: TMoLELinear(nn.Linear(4, 4), TaskRouting(cfg, torch.float32), cfg)
        for how, cfg in (
            (how, TMoLEConfig(task_embedding_dim=512, router_init=how))
            for how in ("default", "normal")
        )
    }
    assert 0.9 < float(layers["normal"].router.weight.detach().std()) < 1.1
    bound = 1 / 512**0.5  # nn.Linear's kaiming-uniform bound for fan-in 512
    assert float(layers["default"].router.weight.detach().abs().max()) <= bound


@pytest.mark.parametrize(("how", "apart"), [("normal", True), ("default", False)])
def test_a_fresh_default_adapter_routes_generative_tasks_apart(
    tiny_model_dir: Path, model_cfg: ModelConfig, how: str, apart: bool
) -> None:
    """Figure 2 of an untrained adapter: with the authors' N(0, 1) routers (the default) most
    generative-task pairs route differently (similarity < .9); nn.Linear's init gives every
    task near-uniform gates (> .95 here, .98-1.00 after the default run trained them)."""
    from recfound.evaluate.figures import adapter_routing_similarity
    from recfound.tasks import TASKS

    assert model_cfg.tmole.router_init == "normal"  # the default
    torch.manual_seed(0)
    cfg = model_cfg.model_copy(
        update={"tmole": model_cfg.tmole.model_copy(update={"router_init": how})}
    )
    adapter = attach_adapter(fresh_model(tiny_model_dir), cfg)
    generative = [task for task in TASKS if not task.is_embedding]
    _, similarity = adapter_routing_similarity(adapter, generative)
    pairs = similarity[torch.triu_indices(len(generative), len(generative), 1).unbind()]
    if apart:
        assert (pairs < 0.9).mean() > 0.5
    else:
        assert pairs.min() > 0.95


def small_layer() -> tuple[TMoLEConfig, TaskRouting, TMoLELinear]:
    """A seeded 12 -> 10 TMoLE layer (rank 4) with nonzero up-projections, and its routing."""
    torch.manual_seed(0)
    cfg = TMoLEConfig(task_embedding_dim=8, rank=4)
    routing = TaskRouting(cfg, torch.float32)
    layer = TMoLELinear(nn.Linear(12, 10), routing, cfg)
    with torch.no_grad():
        layer.lora_b.normal_()
    return cfg, routing, layer


@pytest.mark.parametrize(
    ("tasks", "experts"),
    [([0, 2, 1], slice(0, 4)), ([3, 12, 7], slice(2, 6)), ([0, 5], slice(0, 6))],
    ids=["embedding", "generative", "mixed"],
)
def test_a_one_kind_batch_computes_only_its_kinds_experts_with_identical_results(
    tasks: list[int], experts: slice
) -> None:
    cfg, routing, layer = small_layer()
    x = torch.randn(len(tasks), 5, 12)
    ids = torch.tensor(tasks)
    params = {"lora_a": layer.lora_a, "lora_b": layer.lora_b, "router": layer.router.weight}
    params["task_table"] = routing.task_embedding

    def output_and_grads(forward):
        for param in params.values():
            param.grad = None
        out = forward()
        out.square().sum().backward()
        return out.detach(), {name: param.grad.clone() for name, param in params.items()}

    with routing.routed(ids):
        assert routing.experts == experts
        sliced = output_and_grads(lambda: layer(x))
    everything = slice(0, layer.num_experts)
    full = output_and_grads(lambda: layer.base(x) + layer.adapter_delta(x, ids, everything))
    torch.testing.assert_close(sliced[0], full[0])
    for name in params:
        torch.testing.assert_close(sliced[1][name], full[1][name])
    unused = [e for e in range(layer.num_experts) if not experts.start <= e < experts.stop]
    for e in unused:  # as before: the masked experts get exactly zero gradient
        rows = slice(e * cfg.rank, (e + 1) * cfg.rank)
        assert not sliced[1]["lora_a"][rows].any() and not sliced[1]["lora_b"][:, rows].any()
        assert not sliced[1]["router"][e].any()


def _layer_with_counted_scales(monkeypatch: pytest.MonkeyPatch):
    """A TMoLE layer whose gate-scale computations are counted."""
    _, routing, layer = small_layer()
    calls = []
    compute = layer.rank_block_scales
    monkeypatch.setattr(layer, "rank_block_scales", lambda ids: calls.append(1) or compute(ids))
    return routing, layer, calls


def test_without_autograd_gates_are_computed_once_per_block_with_the_same_outputs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    routing, layer, calls = _layer_with_counted_scales(monkeypatch)
    x, ids = torch.randn(3, 5, 12), torch.tensor([4, 4, 7])
    with torch.no_grad(), routing.routed(ids):
        first, second, third = layer(x), layer(x), layer(x)  # e.g. three decoding steps
    assert len(calls) == 1
    fresh = layer.base(x) + layer.adapter_delta(x, ids, routing.experts)  # outside: no cache
    torch.testing.assert_close(first, fresh)
    assert torch.equal(first, second) and torch.equal(second, third)


def test_with_autograd_gates_are_recomputed_and_a_new_block_sees_new_router_weights(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    routing, layer, calls = _layer_with_counted_scales(monkeypatch)
    x, ids = torch.randn(2, 5, 12), torch.tensor([4, 7])
    with routing.routed(ids):
        layer(x).sum().backward()
        layer(x)
    assert len(calls) == 2 and layer.router.weight.grad.abs().sum() > 0
    with torch.no_grad(), routing.routed(ids):
        before = layer(x)
    with torch.no_grad():
        layer.router.weight.mul_(3.0)  # what an optimizer step between two blocks does
    with torch.no_grad(), routing.routed(ids):
        after = layer(x)
    assert not torch.allclose(before, after)
    assert routing.scale_cache == {}  # nothing outlives its block


# -------------------------------------------------------------------------------- training


def test_only_adapter_parameters_are_trainable_and_all_receive_gradients(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = attach_adapter(model, model_cfg)
    randomize_up_projections(adapter)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapter.adapter_state_dict())
    assert {id(p) for p in adapter.trainable_parameters()} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    adapter_suffixes = ("lora_a", "lora_b", "router.weight", "router.bias", "task_embedding")
    assert all(name.endswith(adapter_suffixes) for name in trainable)

    tasks = [0, 3, 2, 11]
    tokens = token_batch(len(tasks))
    with adapter.route(torch.tensor(tasks)):
        model(tokens, labels=tokens).loss.backward()
    named = dict(model.named_parameters())
    for name in trainable:
        grad = named[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    table_grad = named["tmole_routing.task_embedding"].grad
    used = torch.zeros(NUM_TASKS, dtype=torch.bool)
    used[tasks] = True
    assert torch.all(table_grad[used].abs().sum(-1) > 0)
    assert torch.all(table_grad[~used] == 0)


def test_adapter_parameters_take_the_base_weight_dtype(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16)
    adapter = attach_adapter(model, model_cfg)
    assert {p.dtype for p in adapter.trainable_parameters()} == {torch.bfloat16}
    assert logits_for(model, adapter, token_batch(2), [0, 5]).dtype == torch.bfloat16


def test_attaching_twice_is_refused(tiny_model_dir: Path, model_cfg: ModelConfig) -> None:
    model = fresh_model(tiny_model_dir)
    attach_adapter(model, model_cfg)
    with pytest.raises(ValueError, match="already carries an adapter"):
        attach_adapter(model, model_cfg)


# ------------------------------------------------------------------------------- save/load


def test_save_then_load_reproduces_outputs_for_every_task(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path
) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = attach_adapter(model, model_cfg)
    randomize_up_projections(adapter)
    adapter.save(tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == [
        ADAPTER_CONFIG_FILE,
        ADAPTER_WEIGHTS_FILE,
    ]

    reloaded_model = fresh_model(tiny_model_dir)
    reloaded = load_adapter(reloaded_model, tmp_path / "adapter")
    assert reloaded.kind == "tmole"
    tasks = list(range(NUM_TASKS))
    tokens = token_batch(NUM_TASKS)
    torch.testing.assert_close(
        logits_for(reloaded_model, reloaded, tokens, tasks),
        logits_for(model, adapter, tokens, tasks),
    )


def test_adapter_state_dict_round_trips_into_a_fresh_adapter(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = attach_adapter(model, model_cfg)
    randomize_up_projections(adapter)
    other_model = fresh_model(tiny_model_dir)
    other = attach_adapter(other_model, model_cfg)
    other.load_adapter_state_dict(adapter.adapter_state_dict())
    tokens = token_batch(2)
    torch.testing.assert_close(
        logits_for(other_model, other, tokens, [0, 8]), logits_for(model, adapter, tokens, [0, 8])
    )
    state = dict(adapter.adapter_state_dict())
    state.pop("tmole_routing.task_embedding")
    with pytest.raises(AdapterStateMismatch, match="missing keys"):
        other.load_adapter_state_dict(state)


def test_loading_never_unpickles(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = attach_adapter(fresh_model(tiny_model_dir), model_cfg)
    adapter.save(tmp_path / "adapter")
    with safe_open(tmp_path / "adapter" / ADAPTER_WEIGHTS_FILE, framework="pt") as weights:
        assert set(weights.keys()) == set(adapter.adapter_state_dict())

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling was attempted")

    for owner, name in ((pickle, "load"), (pickle, "loads"), (torch, "load")):
        monkeypatch.setattr(owner, name, refuse)
    load_adapter(fresh_model(tiny_model_dir), tmp_path / "adapter")


def _saved_adapter(tiny_model_dir: Path, cfg: ModelConfig, out: Path) -> Path:
    attach_adapter(fresh_model(tiny_model_dir), cfg).save(out)
    return out


def test_tampered_config_with_other_rank_raises_data_error_naming_the_weights(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path
) -> None:
    out = _saved_adapter(tiny_model_dir, model_cfg, tmp_path / "adapter")
    config = json.loads((out / ADAPTER_CONFIG_FILE).read_text())
    config["tmole"]["rank"] = 4
    (out / ADAPTER_CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(DataError, match=r"adapter_model\.safetensors.*shape mismatches"):
        load_adapter(fresh_model(tiny_model_dir), out)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda text: text[:-5], "not valid JSON"),
        (lambda text: text.replace('"tmole"', '"moe"', 1), "unknown adapter"),
        (lambda text: text.replace('"rank"', '"rnk"'), "not a valid TMoLE adapter config"),
        (lambda text: text.replace('"U2I"', '"X2Y"'), "task_codes"),
    ],
)
def test_tampered_config_raises_data_error_naming_the_config(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path, tamper, reason: str
) -> None:
    out = _saved_adapter(tiny_model_dir, model_cfg, tmp_path / "adapter")
    path = out / ADAPTER_CONFIG_FILE
    path.write_text(tamper(path.read_text()))
    with pytest.raises(DataError, match=rf"adapter_config\.json: .*{reason}"):
        load_adapter(fresh_model(tiny_model_dir), out)


def test_weights_that_are_not_safetensors_are_refused(
    tiny_model_dir: Path, model_cfg: ModelConfig, tmp_path: Path
) -> None:
    out = _saved_adapter(tiny_model_dir, model_cfg, tmp_path / "adapter")
    (out / ADAPTER_WEIGHTS_FILE).write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(DataError, match="not a readable safetensors file"):
        load_adapter(fresh_model(tiny_model_dir), out)
    (out / ADAPTER_WEIGHTS_FILE).unlink()
    with pytest.raises(DataError, match="missing"):
        load_adapter(fresh_model(tiny_model_dir), out)


# -------------------------------------------------------------------------- preset, capacity


def test_the_authors_preset_sets_their_adapter_settings_from_one_switch(
    default_config: Config,
) -> None:
    raw = default_config.model_dump(by_alias=True, exclude={"model"})
    raw["model"] = yaml.safe_load((ROOT / "params.yaml").read_text())["model"]
    raw["model"]["preset"] = "authors"
    model = Config.model_validate(raw).model
    assert model.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert (model.tmole.rank, model.tmole.alpha, model.tmole.dropout) == (16, 64.0, 0.1)
    assert model.tmole.router_init == "normal"
    assert (model.lora.rank, model.lora.alpha, model.lora.dropout) == (16, 64.0, 0.1)
    assert ModelConfig.model_validate(model.model_dump()) == model  # a dump re-validates
    assert default_config.model.preset is None and default_config.model.tmole.rank == 8


@pytest.mark.parametrize(
    ("conflict", "key"),
    [
        ({"tmole": {"rank": 8}}, "tmole.rank"),
        ({"target_modules": ["q_proj"]}, "target_modules"),
        ({"lora": {"dropout": 0.0}}, "lora.dropout"),
    ],
)
def test_a_value_that_contradicts_the_preset_is_an_error_naming_it(
    conflict: dict, key: str
) -> None:
    with pytest.raises(ValueError, match=rf"model\.{key} is .* model\.preset 'authors'"):
        ModelConfig.model_validate({"preset": "authors", **conflict})
    agreeing = {"preset": "authors", "tmole": {"rank": 16}, "lora": {"equal_capacity": True}}
    assert ModelConfig.model_validate(agreeing).tmole.rank == 16  # the preset's own value is fine


def test_equal_capacity_lora_has_tmoles_stacked_rank_and_parameter_count(
    tiny_model_dir: Path, model_cfg: ModelConfig
) -> None:
    lora = model_cfg.lora.model_copy(update={"equal_capacity": True, "dropout": 0.1})
    cfg = model_cfg.model_copy(update={"adapter": "lora", "lora": lora})
    experts = sum(expert_group_sizes(cfg.tmole))
    settings = lora_settings(cfg)
    assert settings == equal_capacity_lora(cfg.tmole, 0.1)
    assert (settings.rank, settings.alpha) == (experts * cfg.tmole.rank, experts * cfg.tmole.alpha)
    lora_adapter = attach_adapter(fresh_model(tiny_model_dir), cfg)
    assert lora_adapter.peft_config.r == settings.rank
    assert lora_adapter.peft_config.lora_dropout == 0.1
    tmole_adapter = attach_adapter(fresh_model(tiny_model_dir), model_cfg)
    stacked = sum(p.numel() for n, p in tmole_adapter.adapter_state_dict().items() if "lora_" in n)
    assert sum(p.numel() for p in lora_adapter.trainable_parameters()) == stacked


def test_the_no_tmole_ablation_trains_the_equal_capacity_lora(default_config: Config) -> None:
    model = variant_config(default_config, "no_tmole").model
    assert model.adapter == "lora" and model.lora.equal_capacity
    assert lora_settings(model).rank == sum(expert_group_sizes(model.tmole)) * model.tmole.rank


# ------------------------------------------------------------------------------- LoRA mode


def test_lora_mode_is_a_peft_lora_behind_the_same_interface(
    tiny_model_dir: Path, lora_cfg: ModelConfig, tmp_path: Path
) -> None:
    model = fresh_model(tiny_model_dir)
    adapter = attach_adapter(model, lora_cfg)
    assert isinstance(adapter, Adapter) and adapter.kind == "lora"
    randomize_up_projections(adapter)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert {id(p) for p in adapter.trainable_parameters()} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    assert len(adapter.adapter_state_dict()) == len(trainable)

    tokens = token_batch(3)
    # route() is a no-op: one LoRA serves every task.
    logits = logits_for(model, adapter, tokens, [0, 4, 12])
    torch.testing.assert_close(logits, logits_for(model, adapter, tokens, [5, 5, 5]))
    for gates in routing_weights(adapter, 3).values():
        assert gates.tolist() == [1.0]

    adapter.save(tmp_path / "lora")
    reloaded_model = fresh_model(tiny_model_dir)
    reloaded = load_adapter(reloaded_model, tmp_path / "lora")
    assert reloaded.kind == "lora"
    torch.testing.assert_close(logits_for(reloaded_model, reloaded, tokens, [0, 0, 0]), logits)
    # The saved directory is a standard PEFT adapter.
    peft_model = PeftModel.from_pretrained(fresh_model(tiny_model_dir), tmp_path / "lora")
    with torch.no_grad():
        torch.testing.assert_close(peft_model(tokens).logits, logits)
