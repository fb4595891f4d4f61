"""Does a params file fit a base model? Checked on the model's config alone, without weights.

A 7B base is 14 GB to download; whether `model.target_modules` names layers the architecture
has, or whether `train.max_len_*` stay within its positions, can be said from its config.json.
The architecture is built on torch's `meta` device (shapes, no storage), so the check runs on
any CPU in a second, and `recfound plan` (recfound.train.plan) counts parameters on the same
structure.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from recfound.config import Config, TrainConfig
from recfound.errors import DataError

CONFIG_FILE = "config.json"


def model_config_path(location: str | Path) -> Path:
    """The config.json of `location`: the file itself, or the one inside a model directory."""
    path = Path(location)
    return path / CONFIG_FILE if path.is_dir() else path


def default_model_config(base: str) -> Path | None:
    """`model.base`'s config.json when `model.base` is a local directory holding one, else None
    (a hub id or the bundled GGUF name has no config to read here)."""
    candidate = Path(base) / CONFIG_FILE
    return candidate if candidate.is_file() else None


def load_model_config(location: str | Path) -> PretrainedConfig:
    """A transformers config from a config.json or a model directory holding one.

    DataError naming the file when it is missing, not JSON, or not a config transformers knows.
    """
    path = model_config_path(location)
    if not path.is_file():
        raise DataError(path, "not found: pass a model directory or its config.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(path, f"not valid JSON: {err}") from None
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise DataError(path, "not a transformers model config (no model_type)")
    try:
        return AutoConfig.for_model(**raw)
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"not a model config transformers can build: {err}") from None


def with_layers(model_config: PretrainedConfig, layers: int) -> PretrainedConfig:
    """A copy of `model_config` with `layers` decoder layers (per-layer lists cut to match)."""
    out = copy.deepcopy(model_config)
    out.num_hidden_layers = layers
    if isinstance(getattr(out, "layer_types", None), list):
        out.layer_types = out.layer_types[:layers]
    return out


def meta_causal_lm(model_config: PretrainedConfig, dtype: torch.dtype) -> PreTrainedModel:
    """The causal LM of `model_config` on the meta device: every module and shape, no storage."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(model_config, dtype=dtype)


def linear_layer_names(model: nn.Module) -> set[str]:
    """The last name component of every nn.Linear: what `model.target_modules` may name."""
    return {
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    }


def sequence_lengths(train: TrainConfig) -> dict[str, int]:
    """The longest sequence of each kind training builds: queries, passages, prompt + response."""
    return {
        "train.max_len_query": train.max_len_query,
        "train.max_len_passage": train.max_len_passage,
        "train.max_len_prompt + train.max_len_response": train.max_len_prompt
        + train.max_len_response,
    }


def fit_problems(cfg: Config, model_config: PretrainedConfig) -> list[str]:
    """What in `cfg` does not fit the model `model_config` describes, one sentence each ([]: fits).

    - `model.target_modules` naming no nn.Linear of the architecture (PEFT's suffix rule: the
      last name component), e.g. `gate_proj` on a model whose MLP calls it `fc1`;
    - a sequence length above `max_position_embeddings` (the positions the model was trained
      for), or above a `sliding_window` (attention would not see the whole text).
    """
    problems = []
    names = linear_layer_names(meta_causal_lm(model_config, torch.bfloat16))
    absent = [m for m in cfg.model.target_modules if m not in names]
    if absent:
        problems.append(
            f"model.target_modules {absent} name no linear layer of {model_config.model_type}; "
            f"its linear layers: {sorted(names)}"
        )
    limits = {
        "max_position_embeddings": getattr(model_config, "max_position_embeddings", None),
        "sliding_window": getattr(model_config, "sliding_window", None),
    }
    for key, length in sequence_lengths(cfg.train).items():
        for limit_name, limit in limits.items():
            if isinstance(limit, int) and length > limit:
                problems.append(f"{key} = {length} is above the model's {limit_name} ({limit})")
    return problems
