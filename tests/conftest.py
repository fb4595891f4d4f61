"""Shared fixtures: a tiny random Llama (built once per session) and the default config."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from recfound.config import Config, load_config
from recfound.index.fingerprint_cache import CACHE_DIR_ENV
from recfound.model.unified import CPU_BF16_ENV

# fp32 on every CPU: `auto` would pick bf16 on an AMX machine and not on another, and the
# exactness tests (GradCache, merge, export) compare fp32 numbers. Subprocesses inherit it.
os.environ.setdefault(CPU_BF16_ENV, "0")
# Model fingerprints remembered by the tests stay out of the user's cache directory.
os.environ.setdefault(CACHE_DIR_ENV, tempfile.mkdtemp(prefix="recfound-test-cache-"))

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny randomly initialised Llama + tokenizer saved as a HF model directory."""
    from recfound.model.tiny import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module: the tiny model gains nothing from threads, one thread
    matches the subprocesses the training tests start, and CI has two cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def default_config() -> Config:
    """The project's params.yaml, as the pipeline reads it."""
    return load_config(ROOT / "params.yaml")
