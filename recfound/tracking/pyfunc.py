"""The registered model as an `mlflow.pyfunc` model: one DataFrame in, generations/embeddings out.

Its artifacts are the base model directory, the merged adapter and the params.yaml it was
trained with; loading goes through recfound.model.inference, the same code evaluation and
`recfound generate` / `recfound embed` use, so a served model answers exactly as it was scored.

Input: a DataFrame with string columns `task` (a task code, e.g. SR or U2I), `input` and
optionally `instruction`. Output: a DataFrame with one row per input row and the columns
`task`, `generation` (text, generative tasks; None otherwise) and `embedding` (unit-norm list
of floats, embedding tasks; None otherwise).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import pandas as pd

from recfound.errors import RecFoundError

# Names of the artifacts the model is logged with (registry.log_evaluated_model).
BASE_MODEL = "base_model"
ADAPTER = "adapter"
PARAMS = "params"

INPUT_COLUMNS = ("task", "input")
OPTIONAL_COLUMNS = ("instruction",)


class RecFoundPyFunc(mlflow.pyfunc.PythonModel):
    """RecFound behind MLflow's generic `predict(DataFrame)` interface."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load base model + merged adapter once, in the dtype/device params.yaml resolves to."""
        from recfound.config import load_config
        from recfound.model.inference import load_recfound

        self.cfg = load_config(context.artifacts[PARAMS])
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
