"""What the merge stage writes under `paths.merged`: the names its readers (evaluate, the
registry, the index) rely on, apart from the merge code so that reading them imports nothing
of it (and a stage that only reads the merged model does not depend on the merge code)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from recfound.outputs import MERGED_ADAPTER_DIR  # the merged TMoLE (or LoRA) adapter

if TYPE_CHECKING:
    from recfound.config import Config

TASK_ADAPTERS_DIR = "tasks"  # one plain PEFT LoRA per task: tasks/<CODE>/
MERGE_INFO_FILE = "merge.json"  # which checkpoints, which method


def merged_adapter_dir(cfg: Config) -> Path:
    """The merged adapter: what `recommend`, the index and, by default, `generate` / `embed`
    answer with."""
    return Path(cfg.paths.merged) / MERGED_ADAPTER_DIR
