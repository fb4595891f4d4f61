"""What the merge stage writes under `paths.merged`: the names its readers (evaluate, the
registry, the index) rely on, apart from the merge code so that reading them imports nothing
of it (and a stage that only reads the merged model does not depend on the merge code)."""

from __future__ import annotations

MERGED_ADAPTER_DIR = "adapter"  # the merged TMoLE (or LoRA) adapter
TASK_ADAPTERS_DIR = "tasks"  # one plain PEFT LoRA per task: tasks/<CODE>/
MERGE_INFO_FILE = "merge.json"  # which checkpoints, which method
