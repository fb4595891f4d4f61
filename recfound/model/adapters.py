"""The adapter interface the unified model trains through: TMoLE, or a plain PEFT LoRA.

`attach_adapter(model, cfg)` injects the adapter chosen by `model.adapter` in place and freezes
the base; both kinds answer the same `Adapter` protocol, so training, merging and evaluation
never ask which one they hold (`route()` is a no-op for LoRA).

On disk an adapter is a directory of two files, written atomically:
`adapter_config.json` (JSON only) and `adapter_model.safetensors` (tensors only); nothing is
ever unpickled. A LoRA adapter directory is a standard PEFT one (`PeftModel.from_pretrained`
loads it). A TMoLE directory holds the stacked experts, the routers and the task table under
the model's own module names.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from peft import (
    LoraConfig,
    get_peft_model_state_dict,
    inject_adapter_in_model,
    set_peft_model_state_dict,
)
from peft.tuners.lora import LoraLayer
from pydantic import BaseModel, ConfigDict, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from recfound.atomic import atomic_dir
from recfound.config import LoRAConfig, ModelConfig, TMoLEConfig
from recfound.errors import DataError, RecFoundError, naming
from recfound.model.tmole import TaskRouting, TMoLELinear, expert_group_sizes
from recfound.tasks import NUM_TASKS, TASKS

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
# Where the shared task table lives on the model, so `model.to(device)` moves it with the rest.
ROUTING_MODULE_NAME = "tmole_routing"
# PEFT's key prefix on disk: keys are relative to PeftModel, which wraps the model twice.
PEFT_KEY_PREFIX = "base_model.model."
TMOLE_FORMAT_VERSION = 1


@runtime_checkable
class Adapter(Protocol):
    """What training, merging and evaluation need from an adapter, whatever its kind."""

    kind: str  # "tmole" | "lora"

    def route(self, task_ids: torch.Tensor) -> contextlib.AbstractContextManager[None]:
        """Route every adapted layer by these per-sample task ids inside the block (LoRA: no-op)."""
        ...

    def checkpoint_contexts(self) -> tuple[contextlib.AbstractContextManager, ...]:
        """torch.utils.checkpoint's `context_fn`: (around the forward, around its recompute);
        TMoLE re-enters the forward's routing in the recompute."""
        ...

    def trainable_parameters(self) -> list[nn.Parameter]: ...

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """Only the adapter's tensors (TMoLE: experts, routers, task table), detached."""
        ...

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    def save(self, out_dir: Path) -> None:
        """Write adapter_model.safetensors + adapter_config.json to out_dir, atomically."""
        ...


class AdapterStateMismatch(RecFoundError):
    """An adapter state's keys or shapes do not fit the adapter it is loaded into."""


def _check_state_fits(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> None:
    """Raise AdapterStateMismatch naming missing / unexpected keys and shape mismatches."""
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    wrong_shape = [
        f"{key} {tuple(given[key].shape)} != {tuple(expected[key].shape)}"
        for key in sorted(expected.keys() & given.keys())
        if given[key].shape != expected[key].shape
    ]
    problems = [
        f"{label} ({len(items)}): {', '.join(items[:3])}{' …' if len(items) > 3 else ''}"
        for label, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", wrong_shape),
        )
        if items
    ]
    if problems:
        raise AdapterStateMismatch("adapter state does not fit: " + "; ".join(problems))


def _check_task_ids(task_ids: torch.Tensor) -> None:
    if task_ids.dim() != 1 or task_ids.dtype.is_floating_point or task_ids.dtype == torch.bool:
        raise ValueError(
            "route() takes a 1-D integer tensor of task ids; "
            f"got {task_ids.dtype} of shape {tuple(task_ids.shape)}"
        )
    if task_ids.numel() and (int(task_ids.min()) < 0 or int(task_ids.max()) >= NUM_TASKS):
        raise ValueError(f"task ids must lie in 0..{NUM_TASKS - 1}; got {task_ids.tolist()}")


def _has_adapter(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") or any(
        isinstance(module, TMoLELinear | LoraLayer | TaskRouting) for module in model.modules()
    )


def _base_model_name(model: PreTrainedModel) -> str | None:
    return getattr(model, "name_or_path", None) or None


# --------------------------------------------------------------------------------------- TMoLE


class TMoLEAdapterFile(BaseModel):
    """The schema of a TMoLE adapter_config.json; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    adapter_type: Literal["tmole"]
    format_version: Literal[1]
    base_model_name_or_path: str | None
    target_modules: tuple[str, ...]
    tmole: TMoLEConfig
    task_codes: tuple[str, ...]
    adapted_modules: tuple[str, ...]


class TMoLEAdapter:
    """TMoLE experts injected into every target linear layer, routed by per-sample task ids."""

    kind = "tmole"

    def __init__(self, model: PreTrainedModel, cfg: ModelConfig) -> None:
        """Wrap every target nn.Linear of `model` in a TMoLELinear (in place); freeze the base."""
        if _has_adapter(model):
            raise ValueError("the model already carries an adapter; attach to a fresh base model")
        self.model = model
        self.config = cfg.tmole
        self.target_modules = tuple(cfg.target_modules)
        targets = _target_linears(model, self.target_modules)
        first_weight = next(iter(targets.values())).weight
        model.requires_grad_(False)
        self.routing = TaskRouting(cfg.tmole, first_weight.dtype, first_weight.device)
        model.add_module(ROUTING_MODULE_NAME, self.routing)
        self.layers: dict[str, TMoLELinear] = {}
        for name, linear in targets.items():
            self.layers[name] = TMoLELinear(linear, self.routing, cfg.tmole)
            model.set_submodule(name, self.layers[name])

    @contextlib.contextmanager
    def route(self, task_ids: torch.Tensor | Sequence[int]) -> Iterator[None]:
        """Inside the block every TMoLE layer routes sample i by task_ids[i] (one id broadcasts).

        Keep the backward inside the block too when gradient checkpointing recomputes forwards.
        """
        ids = torch.as_tensor(task_ids, device=self.routing.task_embedding.device)
        _check_task_ids(ids)
        with self.routing.routed(ids):
            yield

    def checkpoint_contexts(self) -> tuple[contextlib.AbstractContextManager, ...]:
        """The recompute of a checkpointed layer routes as its forward did (`TaskRouting`)."""
        return self.routing.checkpoint_contexts()

    def named_trainable_parameters(self) -> dict[str, nn.Parameter]:
        """Experts, routers and task table under the model's own parameter names."""
        adapter_params = {
            id(p) for layer in self.layers.values() for p in _own_adapter_params(layer)
        }
        adapter_params.add(id(self.routing.task_embedding))
        return {n: p for n, p in self.model.named_parameters() if id(p) in adapter_params}

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.named_trainable_parameters().values())

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {name: p.detach() for name, p in self.named_trainable_parameters().items()}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy `state` into the adapter (dtype converted to the adapter's); keys must match."""
        params = self.named_trainable_parameters()
        _check_state_fits(params, state)
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(state[name])

    def file_config(self) -> TMoLEAdapterFile:
        return TMoLEAdapterFile(
            adapter_type="tmole",
            format_version=TMOLE_FORMAT_VERSION,
            base_model_name_or_path=_base_model_name(self.model),
            target_modules=self.target_modules,
            tmole=self.config,
            task_codes=tuple(t.code for t in TASKS),
            adapted_modules=tuple(self.layers),
        )

    def save(self, out_dir: Path) -> None:
        with atomic_dir(out_dir) as tmp:
            (tmp / ADAPTER_CONFIG_FILE).write_text(
                self.file_config().model_dump_json(indent=2) + "\n", encoding="utf-8"
            )
            weights = tmp / ADAPTER_WEIGHTS_FILE
            with naming(weights):  # safetensors' errors name no file
                save_file(_contiguous_copies(self.adapter_state_dict()), weights)

    def task_gates(self, task_id: int) -> dict[str, torch.Tensor]:
        """Per adapted layer, g(t) over the E experts (no grad)."""
        ids = torch.tensor([task_id], device=self.routing.task_embedding.device)
        _check_task_ids(ids)
        with torch.no_grad():
            return {name: layer.task_gates(ids)[0] for name, layer in self.layers.items()}


def _own_adapter_params(layer: TMoLELinear) -> list[nn.Parameter]:
    return [layer.lora_a, layer.lora_b, *layer.router.parameters()]


def _target_linears(model: nn.Module, target_modules: Sequence[str]) -> dict[str, nn.Linear]:
    """Every nn.Linear whose last name component is in target_modules (PEFT's suffix rule)."""
    targets = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in target_modules
    }
    if not targets:
        raise ValueError(f"no nn.Linear named any of {list(target_modules)} in the model")
    return targets


def _contiguous_copies(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses views and shared storage; a clone per tensor is small for adapters.
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


# ---------------------------------------------------------------------------------------- LoRA


class LoRAAdapter:
    """A plain PEFT LoRA (one adapter shared by all tasks) behind the same interface."""

    kind = "lora"

    def __init__(self, model: PreTrainedModel, peft_config: LoraConfig) -> None:
        """Inject `peft_config`'s LoRA layers into `model` in place; freeze the base."""
        if _has_adapter(model):
            raise ValueError("the model already carries an adapter; attach to a fresh base model")
        self.model = model
        self.peft_config = peft_config
        model.requires_grad_(False)
        inject_adapter_in_model(peft_config, model)
        self.layers: dict[str, LoraLayer] = {
            name: module for name, module in model.named_modules() if isinstance(module, LoraLayer)
        }

    @classmethod
    def from_model_config(cls, model: PreTrainedModel, cfg: ModelConfig) -> LoRAAdapter:
        """The LoRA `lora_settings(cfg)` describes, on `cfg.target_modules`."""
        peft_config = lora_config(lora_settings(cfg), cfg.target_modules, _base_model_name(model))
        return cls(model, peft_config)

    def route(self, task_ids: torch.Tensor | Sequence[int]) -> contextlib.AbstractContextManager:
        """One LoRA serves every task: nothing to route."""
        return contextlib.nullcontext()

    def checkpoint_contexts(self) -> tuple[contextlib.AbstractContextManager, ...]:
        """Nothing to re-enter: the recompute needs no routing."""
        return contextlib.nullcontext(), contextlib.nullcontext()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in _lora_params(layer)]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """PEFT's adapter state (keys like `model.layers.0.self_attn.q_proj.lora_A.weight`)."""
        return {k: v.detach() for k, v in get_peft_model_state_dict(self.model).items()}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        _check_state_fits(self.adapter_state_dict(), state)
        set_peft_model_state_dict(self.model, state)

    def save(self, out_dir: Path) -> None:
        """A standard PEFT LoRA directory (loadable by `PeftModel.from_pretrained`)."""
        write_peft_lora_dir(out_dir, self.peft_config, self.adapter_state_dict())


def write_peft_lora_dir(
    out_dir: Path,
    peft_config: LoraConfig,
    state: dict[str, torch.Tensor],
    extra_json: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Atomically write a PEFT LoRA directory: adapter_config.json + adapter_model.safetensors.

    `state` has PEFT's in-memory keys (`<module>.lora_A.weight`); on disk they get PEFT's
    `base_model.model.` prefix. `extra_json` maps further file names to JSON objects.
    """
    with atomic_dir(out_dir) as tmp:
        peft_config.save_pretrained(str(tmp))
        on_disk = {PEFT_KEY_PREFIX + k: v for k, v in state.items()}
        with naming(tmp / ADAPTER_WEIGHTS_FILE):  # safetensors' errors name no file
            save_file(_contiguous_copies(on_disk), tmp / ADAPTER_WEIGHTS_FILE)
        for file_name, content in (extra_json or {}).items():
            (tmp / file_name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _lora_params(layer: LoraLayer) -> list[nn.Parameter]:
    return [
        p for adapter_modules in (layer.lora_A, layer.lora_B) for p in adapter_modules.parameters()
    ]


def equal_capacity_lora(cfg: TMoLEConfig, dropout: float) -> LoRAConfig:
    """A plain LoRA as wide as TMoLE's E experts together: rank E·r, α = E·α.

    "Equal capacity" means equal adapter rank, hence equal adapter matrix parameters: its A and B
    have exactly the shapes of TMoLE's stacked A (E·r × in) and B (out × E·r), so
    E·r·(in + out) per adapted layer. TMoLE has on top its routers (E·(dim + 1) per layer) and
    the task table (13 × dim), a small share; and any one task of TMoLE uses only the experts its
    kind may (e.g. 4 of 6), while this LoRA serves every task with all E·r ranks. α grows with
    the rank so that the scaling α/r equals each TMoLE expert's.
    """
    experts = sum(expert_group_sizes(cfg))
    return LoRAConfig(rank=experts * cfg.rank, alpha=experts * cfg.alpha, dropout=dropout)


def lora_settings(cfg: ModelConfig) -> LoRAConfig:
    """The LoRA `model.adapter: lora` trains: `model.lora`, or with `model.lora.equal_capacity`
    the equal-capacity LoRA of `model.tmole` (`equal_capacity_lora`, dropout from `model.lora`)."""
    if cfg.lora.equal_capacity:
        return equal_capacity_lora(cfg.tmole, cfg.lora.dropout)
    return cfg.lora


def lora_config(
    cfg: LoRAConfig, target_modules: Sequence[str], base_model_name_or_path: str | None
) -> LoraConfig:
    """The PEFT LoraConfig for `cfg` (scaling α/r, dropout on the adapter input, causal LM)."""
    return LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        target_modules=list(target_modules),
        lora_dropout=cfg.dropout,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model_name_or_path,
    )


# ------------------------------------------------------------------------------ entry points


def attach_adapter(model: PreTrainedModel, cfg: ModelConfig) -> Adapter:
    """Inject the adapter `cfg.adapter` names into `model` in place and freeze the base weights.

    TMoLE: each target linear becomes y = W x + Σ_e g_e(t)(α/r) B_e A_e x (recfound.model.tmole),
    with a freshly initialised task table (Xavier-normal), routers (`model.tmole.router_init`),
    A (kaiming) and B (zeros), so the model's outputs are unchanged until training moves B.
    LoRA: PEFT's LoRA of `lora_settings(cfg)` (rank `model.lora.rank`, or E·r with
    `model.lora.equal_capacity`) on the same target modules.
    """
    if cfg.adapter == "tmole":
        return TMoLEAdapter(model, cfg)
    return LoRAAdapter.from_model_config(model, cfg)


def load_adapter(model: PreTrainedModel, adapter_dir: Path) -> Adapter:
    """Attach the adapter saved in `adapter_dir` to a fresh base `model` and load its weights.

    Reads adapter_config.json (JSON) and adapter_model.safetensors (tensors); never unpickles.
    A missing, malformed or mismatching file raises DataError naming the file and the reason.
    """
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / ADAPTER_CONFIG_FILE
    weights_path = adapter_dir / ADAPTER_WEIGHTS_FILE
    raw = _read_json_object(config_path)
    state = _read_safetensors(weights_path)
    adapter: TMoLEAdapter | LoRAAdapter
    if raw.get("adapter_type") == "tmole":
        file_cfg = _parse_tmole_file(config_path, raw)
        model_cfg = ModelConfig(
            adapter="tmole", target_modules=file_cfg.target_modules, tmole=file_cfg.tmole
        )
        adapter = TMoLEAdapter(model, model_cfg)
        differing = sorted(set(file_cfg.adapted_modules) ^ set(adapter.layers))
        if differing:
            raise DataError(
                config_path,
                f"adapted_modules differ from the model's target layers: {differing[:3]}",
            )
    elif raw.get("peft_type") == "LORA":
        adapter = LoRAAdapter(model, _parse_lora_file(config_path))
        state = {k.removeprefix(PEFT_KEY_PREFIX): v for k, v in state.items()}
    else:
        raise DataError(
            config_path,
            'unknown adapter: expected "adapter_type": "tmole" or PEFT\'s "peft_type": "LORA"',
        )
    try:
        adapter.load_adapter_state_dict(state)
    except AdapterStateMismatch as err:
        raise DataError(weights_path, str(err)) from None
    return adapter


def routing_weights(adapter: Adapter, task_id: int) -> dict[str, torch.Tensor]:
    """Per adapted layer, the expert weights g(t) for `task_id` (Figure 2's heatmap rows).

    TMoLE: a vector over the E experts (order: embedding-only, shared, generative-only;
    `recfound.model.tmole.expert_labels` names them), summing to 1. LoRA: [1.0] per layer, the
    single always-on expert.
    """
    if isinstance(adapter, TMoLEAdapter):
        return adapter.task_gates(task_id)
    if isinstance(adapter, LoRAAdapter):
        _check_task_ids(torch.tensor([task_id]))
        return {name: torch.ones(1) for name in adapter.layers}
    raise TypeError(f"not an adapter of this project: {type(adapter).__name__}")


def remove_adapter_modules(model: PreTrainedModel) -> PreTrainedModel:
    """Put every adapted layer's base linear back and drop the routing / PEFT bookkeeping.

    The adapter's contribution is discarded: merge it into the base weights first if it should
    stay (recfound.model.export.merge_task_into_base does).
    """
    for name, module in list(model.named_modules()):
        if isinstance(module, TMoLELinear):
            model.set_submodule(name, module.base)
        elif isinstance(module, LoraLayer):
            model.set_submodule(name, module.get_base_layer())
    if isinstance(getattr(model, ROUTING_MODULE_NAME, None), TaskRouting):
        delattr(model, ROUTING_MODULE_NAME)
    if hasattr(model, "peft_config"):
        del model.peft_config
    return model


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(
            path, "missing: not an adapter directory written by Adapter.save()"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise DataError(path, f"expected a JSON object, got {type(raw).__name__}")
    return raw


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(path, "missing: adapter weights must be a safetensors file")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise DataError(path, f"not a readable safetensors file: {err}") from None


def _parse_tmole_file(path: Path, raw: dict[str, Any]) -> TMoLEAdapterFile:
    try:
        file_cfg = TMoLEAdapterFile.model_validate(raw)
    except ValidationError as err:
        raise DataError(path, f"not a valid TMoLE adapter config: {err}") from None
    codes = tuple(t.code for t in TASKS)
    if file_cfg.task_codes != codes:
        raise DataError(
            path, f"task_codes {list(file_cfg.task_codes)} differ from this project's {list(codes)}"
        )
    return file_cfg


def _parse_lora_file(path: Path) -> LoraConfig:
    try:
        return LoraConfig.from_pretrained(str(path.parent))
    except (TypeError, ValueError) as err:
        raise DataError(path, f"not a valid PEFT LoRA config: {err}") from None
