"""The registered model as an `mlflow.pyfunc` model: one DataFrame in, generations/embeddings out.

Its artifacts are the base model directory, the merged adapter, the params.yaml it was
trained with and the task set it was trained on (the merge stage's tasks/tasks.json; a model
logged without it serves all 13 tasks). Loading goes through recfound.model.inference, the same
code evaluation and `recfound generate` / `recfound embed` use, so a served model answers
exactly as it was scored.

Input: a DataFrame with string columns `task` (a task code of the model's task set, e.g. SR or
U2I), `input` and optionally `instruction`. Output: a DataFrame with one row per input row and
the columns `task`, `generation` (text, generative tasks; None otherwise) and `embedding`
(unit-norm list of floats, embedding tasks; None otherwise). A task outside the task set is
refused: its routing was never trained, so its answers would mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from recfound.errors import RecFoundError

# Names of the artifacts the model is logged with (registry.log_evaluated_model).
BASE_MODEL = "base_model"
ADAPTER = "adapter"
PARAMS = "params"
TASK_SET = "task_set"  # optional: absent in a model logged before task subsets existed

INPUT_COLUMNS = ("task", "input")
OPTIONAL_COLUMNS = ("instruction",)


def read_task_set(path: str | Path | None) -> tuple[str, ...]:
    """Task codes of the export index at `path` (recfound.model.export); all 13 when None."""
    from recfound.tasks import TASKS

    if path is None:
        return tuple(task.code for task in TASKS)
    try:
        return tuple(json.loads(Path(path).read_text(encoding="utf-8"))["tasks"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise RecFoundError(f"{path}: unreadable task set of the model: {err}") from None


class RecFoundPyFunc(mlflow.pyfunc.PythonModel):
    """RecFound behind MLflow's generic `predict(DataFrame)` interface."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load base model + merged adapter once, in the dtype/device params.yaml resolves to."""
        from recfound.config import load_config
        from recfound.model.inference import load_recfound

        self.cfg = load_config(context.artifacts[PARAMS])
        self.task_codes = read_task_set(context.artifacts.get(TASK_SET))
        self.model, self.tokenizer = load_recfound(
            context.artifacts[BASE_MODEL], context.artifacts[ADAPTER], self.cfg
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Answer every row; rows sharing task and instruction are batched together."""
        from recfound.model import prompts
        from recfound.model.inference import embed_texts, generate_batch
        from recfound.tasks import task_by_code

        missing = [c for c in INPUT_COLUMNS if c not in model_input.columns]
        if missing:
            raise RecFoundError(f"model input lacks column(s) {', '.join(missing)}")
        frame = model_input.reset_index(drop=True)
        instructions = (
            frame["instruction"].fillna("").astype(str)
            if "instruction" in frame.columns
            else pd.Series([""] * len(frame))
        )
        groups: dict[tuple[str, str], list[int]] = {}
        for row, (code, instruction) in enumerate(zip(frame["task"], instructions, strict=True)):
            groups.setdefault((str(code), instruction), []).append(row)

        generations: list[str | None] = [None] * len(frame)
        embeddings: list[list[float] | None] = [None] * len(frame)
        batch_size = self.cfg.evaluate.batch_size
        for (code, instruction), rows in groups.items():
            try:
                task = task_by_code(code)
            except KeyError as err:
                raise RecFoundError(f"row {rows[0]}: {err.args[0]}") from None
            if task.code not in self.task_codes:
                raise RecFoundError(
                    f"row {rows[0]}: task {task.code} is not one this model was trained on "
                    f"({', '.join(self.task_codes)})"
                )
            texts = [str(frame.at[row, "input"]) for row in rows]
            if task.is_embedding:
                vectors = embed_texts(
                    self.model,
                    self.tokenizer,
                    texts,
                    instruction,
                    task.id,
                    batch_size,
                    progress=False,
                )
                for row, vector in zip(rows, vectors.tolist(), strict=True):
                    embeddings[row] = vector
            else:
                chat = [prompts.generation_prompt(self.tokenizer, instruction, t) for t in texts]
                answers = generate_batch(
                    self.model,
                    self.tokenizer,
                    chat,
                    task.id,
                    self.cfg.evaluate.max_new_tokens,
                    batch_size,
                    progress=False,
                )
                for row, answer in zip(rows, answers, strict=True):
                    generations[row] = answer
        return pd.DataFrame(
            {"task": frame["task"], "generation": generations, "embedding": embeddings}
        )
