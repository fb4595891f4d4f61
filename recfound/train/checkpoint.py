"""Resumable training checkpoints: `<checkpoints>/step-XXXXXX/`, written atomically.

A checkpoint holds everything needed to continue bit-for-bit (on CPU with a fixed seed):

    adapter/                    adapter.save(): adapter_model.safetensors + adapter_config.json
    optimizer.safetensors       optimizer state tensors, keyed "<param index>/<name>"
    optimizer.json              param groups and any non-tensor state
    scheduler.json              LR scheduler state_dict
    rng.safetensors, rng.json   torch (+CUDA) / python / numpy RNG states of every rank
    trainer_state.json          step, run fingerprint, S2Sched and sampler state, extras

Nothing is pickled. The directory is built in a temp sibling and renamed (recfound.atomic), so
a kill leaves either no `step-XXXXXX` or a complete one; leftover temp dirs are swept on start.

Checkpoints of another configuration are not deleted when a run starts over: the whole
directory is renamed to `<checkpoints>.previous/` and removed only once the new run's step 0
is written (`prepare_root`, `drop_previous`). A run killed in between loses nothing; started
again with the old settings it renames them back and resumes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from recfound.atomic import atomic_dir, fsync_path
from recfound.errors import DataError, naming
from recfound.model.adapters import ADAPTER_WEIGHTS_FILE, PEFT_KEY_PREFIX

ADAPTER_DIR = "adapter"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
SCHEDULER_FILE = "scheduler.json"
RNG_TENSORS = "rng.safetensors"
RNG_META = "rng.json"
STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{6,})$")
PREVIOUS_SUFFIX = ".previous"


def checkpoint_dir(root: str | Path, step: int) -> Path:
    """`root/step-XXXXXX` for the state after `step` optimizer steps."""
    return Path(root) / f"step-{step:06d}"


def list_checkpoints(root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `root` as (step, path), oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(root: str | Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint, or None."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def sweep_partial(root: str | Path) -> list[Path]:
    """Remove temp dirs a killed save left behind (`.step-XXXXXX.tmp-*`); returns them."""
    root = Path(root)
    if not root.is_dir():
        return []
    leftovers = [p for p in root.iterdir() if p.name.startswith(".step-")]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def previous_root(root: str | Path) -> Path:
    """`<root>.previous`: where another configuration's checkpoints wait for the new step 0."""
    root = Path(root)
    return root.with_name(root.name + PREVIOUS_SUFFIX)


def latest_fingerprint(root: str | Path) -> str | None:
    """The run fingerprint of the newest complete checkpoint under `root`, or None."""
    latest = latest_checkpoint(root)
    return read_state(latest[1]).get("fingerprint") if latest else None


def prepare_root(root: str | Path, fingerprint: str) -> str | None:
    """Leave under `root` only checkpoints of `fingerprint`, deleting none of another run's
    that the new run has not yet replaced; returns a note for the log, or None.

    - `root` holds another configuration's: renamed whole to `previous_root` (replacing an
      older one, superseded since `root` has a complete checkpoint); the caller runs
      `drop_previous` once the new step 0 is written;
    - `root` holds none, `previous_root` holds this configuration's (a run with other
      settings was killed before its step 0): renamed back, to be resumed;
    - `root` holds this configuration's: a leftover `previous_root` is superseded, removed.
    """
    root = Path(root)
    previous = previous_root(root)
    sweep_partial(root)
    for leftover in root.parent.glob(f".{previous.name}.discard-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    here = latest_fingerprint(root)
    if here == fingerprint:
        drop_previous(root)
        return None
    if here is not None:
        drop_previous(root)
        os.replace(root, previous)
        fsync_path(root.parent)
        return (
            f"checkpoints in {root} come from another configuration or data; starting over "
            f"(they stay in {previous} until this run's first checkpoint is written)"
        )
    if latest_fingerprint(previous) == fingerprint:
        if root.exists():
            shutil.rmtree(root)  # no complete checkpoint in it
        os.replace(previous, root)
        fsync_path(root.parent)
        return f"checkpoints of this configuration restored from {previous}"
    return None


def drop_previous(root: str | Path) -> None:
    """Remove `previous_root(root)`, renamed out of sight first: a kill mid-removal must not
    leave a half-deleted step directory that still looks complete."""
    previous = previous_root(root)
    if not previous.exists():
        return
    doomed = previous.with_name(f".{previous.name}.discard-{os.getpid()}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(previous, doomed)
    shutil.rmtree(doomed)


# ------------------------------------------------------------------------- optimizer <-> files


def optimizer_to_files(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into safetensors-able tensors and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}/{name}"] = value.detach().contiguous().clone()
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_files(tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> dict:
    """Inverse of `optimizer_to_files`: a dict `optimizer.load_state_dict` accepts."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split("/", 1)
        state.setdefault(int(index), {})[name] = value
    for index, values in meta["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


# ------------------------------------------------------------------------------ RNG <-> files


def capture_rng() -> dict[str, Any]:
    """This process's RNG states: python, numpy (JSON-able) and torch CPU/CUDA (tensors)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    rng: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: Mapping[str, Any]) -> None:
    """Set this process's RNGs from what `capture_rng` returned."""
    version, internal, gauss = rng["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def _write_rng(out: Path, per_rank: Sequence[Mapping[str, Any]]) -> None:
    tensors: dict[str, torch.Tensor] = {}
    meta = []
    for rank, rng in enumerate(per_rank):
        tensors[f"{rank}/torch"] = rng["torch"]
        for device, state in enumerate(rng.get("cuda", [])):
            tensors[f"{rank}/cuda/{device}"] = state
        meta.append({"python": rng["python"], "numpy": rng["numpy"]})
    with naming(out / RNG_TENSORS):  # safetensors' errors name no file
        save_file(tensors, out / RNG_TENSORS)
    (out / RNG_META).write_text(json.dumps(meta), encoding="utf-8")


def _read_rng(path: Path, rank: int) -> dict[str, Any]:
    meta = json.loads((path / RNG_META).read_text(encoding="utf-8"))
    tensors = load_file(path / RNG_TENSORS)
    # A run resumed on more ranks than it was saved from reuses the saved ranks cyclically.
    saved = rank % len(meta)
    rng: dict[str, Any] = {**meta[saved], "torch": tensors[f"{saved}/torch"]}
    cuda = sorted(
        (int(k.rsplit("/", 1)[1]), v) for k, v in tensors.items() if k.startswith(f"{saved}/cuda/")
    )
    if cuda:
        rng["cuda"] = [v for _, v in cuda]
    return rng


# ----------------------------------------------------------------------------- save / load


def save_checkpoint(
    root: str | Path,
    step: int,
    adapter: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: Mapping[str, Any],
    rng_per_rank: Sequence[Mapping[str, Any]],
) -> Path:
    """Write checkpoint `root/step-XXXXXX` atomically (call on the main process only).

    `state` is JSON-able trainer state (S2Sched, sampler, fingerprint ...); `step` is added.
    """
    target = checkpoint_dir(root, step)
    with atomic_dir(target) as tmp:
        adapter.save(tmp / ADAPTER_DIR)
        tensors, meta = optimizer_to_files(optimizer.state_dict())
        with naming(tmp / OPTIMIZER_TENSORS):
            save_file(tensors, tmp / OPTIMIZER_TENSORS)
        (tmp / OPTIMIZER_META).write_text(json.dumps(meta), encoding="utf-8")
        (tmp / SCHEDULER_FILE).write_text(json.dumps(scheduler.state_dict()), encoding="utf-8")
        _write_rng(tmp, rng_per_rank)
        # Written last: list_checkpoints() only counts a directory that has it.
        (tmp / STATE_FILE).write_text(
            json.dumps({**state, "step": step}, indent=1), encoding="utf-8"
        )
    return target


def read_state(path: str | Path) -> dict[str, Any]:
    """The trainer_state.json of a checkpoint."""
    file = Path(path) / STATE_FILE
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(file, f"unreadable checkpoint state: {err}") from err


def load_checkpoint(
    path: str | Path,
    adapter: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    rank: int,
) -> dict[str, Any]:
    """Restore adapter weights, optimizer, scheduler and this rank's RNGs; return the state."""
    path = Path(path)
    state = read_state(path)
    weights = load_file(path / ADAPTER_DIR / ADAPTER_WEIGHTS_FILE)
    # A PEFT LoRA directory prefixes its keys as PeftModel does; the adapter API does not.
    adapter.load_adapter_state_dict(
        {k.removeprefix(PEFT_KEY_PREFIX): v for k, v in weights.items()}
    )
    meta = json.loads((path / OPTIMIZER_META).read_text(encoding="utf-8"))
    optimizer.load_state_dict(optimizer_from_files(load_file(path / OPTIMIZER_TENSORS), meta))
    scheduler.load_state_dict(json.loads((path / SCHEDULER_FILE).read_text(encoding="utf-8")))
    restore_rng(_read_rng(path, rank))
    return state
