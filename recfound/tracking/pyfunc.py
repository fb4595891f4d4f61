"""The registered model as an `mlflow.pyfunc` model: one DataFrame in, answers out.

Its artifacts are the base model directory, the merged adapter, the params.yaml it was
trained with, the task set it was trained on (the merge stage's tasks/tasks.json; a model
logged without it serves all 13 tasks) and, when the index stage had written them, the
catalogue indexes (paths.index) and the catalogue (titles; the passages I2I asks with).
Every answer goes through the model's `Predictor` (recfound.model.predictor) and retrieval
through recfound.index.recommend, the code evaluation, `recfound generate` / `embed` /
`recommend` use, so a served model answers exactly as it was scored: prompts fitted to
`train.max_len_prompt`, texts to embed cut to `train.max_len_query` (with an instruction) or
`train.max_len_passage` (without) tokens, vectors normalised in float32.

Input: a DataFrame with string columns `task` (a task code of the model's task set, e.g. SR or
U2I), `input`, optionally `instruction` (absent or null: the instruction the task was trained
with, from the build's build.json; "": none, e.g. to embed a passage), and optionally `k`.
A row whose `k` is a whole number asks for retrieval (U2I, Q2I, I2I: the top k catalogue
items); a row without `k` (absent or null) is answered as before: a generation, or an
embedding. One request may mix them.
Retrieval inputs (docs/recommend.md "From the server"):

- U2I: the user's history, one item per line, oldest first: catalogue item ids (those items
  are left out of the answer) or, when any line is not an item id, titles typed by hand;
- Q2I: the search query;
- I2I: one catalogue item id (the item itself is left out).

Output: one row per input row, the columns `task`, `generation` (text, generative tasks),
`embedding` (unit-norm list of floats, embedding rows without `k`), `items`, `scores` and
`titles` (retrieval rows: item ids best first, their cosine scores, their titles); a column a
row does not answer holds None, never NaN, so the server's JSON is strict.

A request the model cannot answer raises `bad_request` (MLflow's INVALID_PARAMETER_VALUE:
the scoring server answers HTTP 400 with the message) before any row is computed: a missing
column, too many rows (`serve.max_rows`), a task outside the task set (its routing was never
trained, so its answers would mean nothing), an empty input or one over
`serve.max_input_chars`, a `k` that is not a whole number in 1..`serve.max_k`, `k` on a
generative task, an unknown I2I item id, retrieval from a model logged without an index, or an
instruction that alone fills the prompt (or embedding) budget.
"""

from __future__ import annotations

import json
import math
import numbers
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException

from recfound.errors import RecFoundError
from recfound.tasks import Task

if TYPE_CHECKING:
    from recfound.config import Config, ServeConfig
    from recfound.index.recommend import Query, Recommender
    from recfound.model.predictor import Predictor

# Names of the artifacts the model is logged with (registry.log_evaluated_model).
BASE_MODEL = "base_model"
ADAPTER = "adapter"
PARAMS = "params"
TASK_SET = "task_set"  # optional: absent in a model logged before task subsets existed
INDEX = "index"  # optional: paths.index; absent when logged before the index stage ran
CATALOGUE = "catalogue"  # the build's catalogue.parquet, logged with the index
BUILD = "build"  # optional: build.json, whose `instructions` are each task's default

INPUT_COLUMNS = ("task", "input")
OPTIONAL_COLUMNS = ("instruction",)
# Optional too; any JSON type in the signature, as one column mixes numbers and nulls (a
# "long" column cannot hold null, a "double" one refuses int64 frames): checked by `row_k`.
K_COLUMN = "k"
OUTPUT_COLUMNS = ("task", "generation", "embedding", "items", "scores", "titles")


def read_task_set(path: str | Path | None) -> tuple[str, ...]:
    """Task codes of the export index at `path` (recfound.model.export); all 13 when None."""
    from recfound.tasks import TASKS

    if path is None:
        return tuple(task.code for task in TASKS)
    try:
        return tuple(json.loads(Path(path).read_text(encoding="utf-8"))["tasks"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise RecFoundError(f"{path}: unreadable task set of the model: {err}") from None


def read_instructions(path: str | Path | None) -> dict[str, str]:
    """Each task's trained instruction from the logged build.json ({} when logged without)."""
    if path is None:
        return {}
    from recfound.data.unified import build_instructions

    return build_instructions(Path(path).parent)


def bad_request(message: str) -> MlflowException:
    """The error of a request the model refuses: MLflow's scoring server answers it with HTTP
    400 and `{"error_code": "INVALID_PARAMETER_VALUE", "message": "... Error: <message>"}`."""
    return MlflowException.invalid_parameter_value(message)


def _empty(value: Any) -> bool:
    """None, NaN or pd.NA: a cell the request left empty."""
    return value is None or (pd.api.types.is_scalar(value) and bool(pd.isna(value)))


def row_text(value: Any, row: int, max_chars: int) -> str:
    """Row `row`'s input as text; bad_request when it is empty or over `max_chars` long."""
    text = "" if _empty(value) else str(value)
    if not text.strip():
        raise bad_request(f"row {row}: input is empty")
    if len(text) > max_chars:
        raise bad_request(
            f"row {row}: input has {len(text)} characters, "
            f"more than serve.max_input_chars = {max_chars}"
        )
    return text


def row_k(value: Any, row: int, max_k: int) -> int | None:
    """Row `row`'s k: None when empty (no retrieval), else a whole number in 1..max_k."""
    if _empty(value):
        return None
    whole = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value).is_integer()
    )
    if not whole:
        shown = repr(value) if isinstance(value, str) else str(value)  # 2.5, not np.float64(2.5)
        raise bad_request(f"row {row}: k must be a whole number, got {shown}")
    if not 1 <= int(value) <= max_k:
        raise bad_request(
            f"row {row}: k must be between 1 and serve.max_k = {max_k}, got {int(value)}"
        )
    return int(value)


@dataclass(frozen=True)
class Row:
    """One checked row of a request."""

    task: Task
    text: str
    instruction: str | None  # None: the row gives none (the task's applies); "": none at all
    k: int | None  # None: generate or embed; else retrieve the top k items


def read_rows(frame: pd.DataFrame, task_codes: Sequence[str], limits: ServeConfig) -> list[Row]:
    """Every row of the request, checked; bad_request naming the first bad one."""
    from recfound.tasks import task_by_code

    missing = [c for c in INPUT_COLUMNS if c not in frame.columns]
    if missing:
        raise bad_request(f"model input lacks column(s) {', '.join(missing)}")
    if len(frame) > limits.max_rows:
        raise bad_request(f"{len(frame)} rows, more than serve.max_rows = {limits.max_rows}")
    frame = frame.reset_index(drop=True)
    rows = []
    for i in range(len(frame)):
        try:
            task = task_by_code(str(frame.at[i, "task"]))
        except KeyError as err:
            raise bad_request(f"row {i}: {err.args[0]}") from None
        if task.code not in task_codes:
            raise bad_request(
                f"row {i}: task {task.code} is not one this model was trained on "
                f"({', '.join(task_codes)})"
            )
        k = row_k(frame.at[i, K_COLUMN], i, limits.max_k) if K_COLUMN in frame.columns else None
        if k is not None and not task.is_embedding:
            raise bad_request(
                f"row {i}: k asks for retrieval, which the embedding tasks U2I, Q2I and I2I "
                f"answer; {task.code} is generative"
            )
        instruction = frame.at[i, "instruction"] if "instruction" in frame.columns else None
        text = row_text(frame.at[i, "input"], i, limits.max_input_chars)
        rows.append(Row(task, text, None if _empty(instruction) else str(instruction), k))
    return rows


def served_recommender(cfg: Config, artifacts: Mapping[str, str]) -> Recommender:
    """A Recommender over the logged model's own artifacts, every index loaded now: an index
    built from another model or catalogue (fingerprints) fails the load, not a request."""
    from recfound.data.catalogue import CATALOGUE_FILE
    from recfound.index.recommend import Recommender
    from recfound.index.stage import indexed_tasks
    from recfound.merge.layout import MERGED_ADAPTER_DIR

    adapter, catalogue = Path(artifacts[ADAPTER]), Path(artifacts[CATALOGUE])
    # Recommender finds them by name under paths.merged and paths.unified; MLflow keeps the
    # names of logged files and directories, unless two collide.
    if (adapter.name, catalogue.name) != (MERGED_ADAPTER_DIR, CATALOGUE_FILE):
        raise RecFoundError(
            f"model artifacts {adapter.name!r}, {catalogue.name!r}: "
            f"expected {MERGED_ADAPTER_DIR!r}, {CATALOGUE_FILE!r}"
        )
    paths = cfg.paths.model_copy(
        update={
            "base_model": Path(artifacts[BASE_MODEL]),
            "merged": adapter.parent,
            "unified": catalogue.parent,
            "index": Path(artifacts[INDEX]),
        }
    )
    recommender = Recommender(cfg.model_copy(update={"paths": paths}))
    for code in indexed_tasks(paths.index):
        recommender.index(code)
    return recommender


class RecFoundPyFunc(mlflow.pyfunc.PythonModel):
    """RecFound behind MLflow's generic `predict(DataFrame)` interface."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        """Load base model + merged adapter once, in the dtype/device params.yaml resolves to;
        and the indexes and catalogue when the model was logged with them."""
        from recfound.config import load_config
        from recfound.model.predictor import Predictor

        artifacts = context.artifacts
        # The scoring server answers requests on threads, but TMoLE's routing is state of the
        # whole model (`TaskRouting.routed`), the decode-time merge swaps its layers, and the
        # tokenizer's truncation setting is its own state: two requests at once would run under
        # each other's task or cut. One request at a time; torch threads share its work.
        self.model_lock = threading.Lock()
        self.cfg = load_config(artifacts[PARAMS])
        self.task_codes = read_task_set(artifacts.get(TASK_SET))
        self.instructions = read_instructions(artifacts.get(BUILD))
        self.recommender: Recommender | None = None
        self.indexed: tuple[str, ...] = ()
        if INDEX in artifacts:
            from recfound.index.stage import indexed_tasks

            self.recommender = served_recommender(self.cfg, artifacts)
            self.indexed = indexed_tasks(artifacts[INDEX])
            loaded = self.recommender.predictor()  # the one model: retrieval's and the rest's
            model, tokenizer = loaded.model, loaded.tokenizer
        else:
            loaded = Predictor.load(self.cfg, artifacts[BASE_MODEL], artifacts[ADAPTER])
            model, tokenizer = loaded.model, loaded.tokenizer
        self.model, self.tokenizer = model, tokenizer
        self.predictor: Predictor = Predictor(
            model,
            tokenizer,
            self.cfg,
            instructions=self.instructions,
            task_codes=self.task_codes,
        )

    def retrieval_query(self, i: int, row: Row) -> Query:
        """Row `i` as a recommend.Query; bad_request when the model cannot answer it."""
        from recfound.index.recommend import text_query, user_query

        code = row.task.code
        if self.recommender is None:
            raise bad_request(
                f"row {i}: this model was logged without a catalogue index, so it cannot "
                f"retrieve; leave k out for the {code} embedding"
            )
        if code not in self.indexed:
            held = ", ".join(self.indexed) or "no task"
            raise bad_request(f"row {i}: the model's catalogue index holds {held}, not {code}")
        catalogue = self.recommender.catalogue
        if row.k > len(catalogue):
            raise bad_request(f"row {i}: k = {row.k}, but the catalogue has {len(catalogue)} items")
        if code == "Q2I":
            query = text_query(row.text)
        elif code == "I2I":
            if row.text.strip() not in catalogue:
                raise bad_request(
                    f"row {i}: unknown item id {row.text.strip()!r}: I2I takes the id of a "
                    "catalogue item"
                )
            query = self.recommender.for_item(row.text.strip())
        else:
            lines = [line.strip() for line in row.text.splitlines() if line.strip()]
            if all(line in catalogue for line in lines):  # item ids: left out of the answer
                history = self.cfg.build.max_history
                query = user_query(catalogue, "of the request", lines, history, seen=False)
            else:
                query = self.recommender.for_history(lines)
        return query if row.instruction is None else replace(query, instruction=row.instruction)

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        """Answer every row, once all are checked; generation and embedding rows sharing
        task and instruction are batched together."""
        rows = read_rows(model_input, self.task_codes, self.cfg.serve)
        queries = {i: self.retrieval_query(i, r) for i, r in enumerate(rows) if r.k is not None}
        answers: dict[str, list[Any]] = {column: [None] * len(rows) for column in OUTPUT_COLUMNS}
        answers["task"] = list(model_input["task"])
        with self.model_lock:
            # inside the lock too: a fast tokenizer's truncation setting is state of the
            # tokenizer, and a request cutting at another length would change this one's ids
            groups = self.prepared_groups(rows)
            self.generate_and_embed(groups, answers)
            for i, query in queries.items():
                found = self.recommender.recommend(query, rows[i].k).items
                answers["items"][i] = [r.item_id for r in found]
                answers["scores"][i] = [r.score for r in found]
                answers["titles"][i] = [r.title for r in found]
        # object columns: pandas 3 would make `generation` a string column, None -> NaN
        return pd.DataFrame(answers, columns=list(OUTPUT_COLUMNS), dtype=object)

    def prepared_groups(self, rows: Sequence[Row]) -> list[tuple[Task, list[int], Any]]:
        """The rows without k, per task and instruction, each group's prompts fitted or texts
        encoded (`Predictor.prompts` / `texts`); bad_request naming the first row whose
        instruction alone fills its budget."""
        from recfound.model.inference import TextInput
        from recfound.model.predictor import InputError

        groups: dict[tuple[Task, str | None], list[int]] = {}
        for i, row in enumerate(rows):
            if row.k is None:
                groups.setdefault((row.task, row.instruction), []).append(i)
        prepared = []
        for (task, _), members in groups.items():
            requests = self.predictor.with_instructions(
                task, [TextInput(rows[i].text, rows[i].instruction) for i in members]
            )
            try:
                if task.is_embedding:
                    inputs: Any = self.predictor.texts(requests)
                else:
                    inputs = self.predictor.prompts(task, requests)
            except InputError as err:
                raise bad_request(f"row {members[err.index]}: {err.reason}") from None
            prepared.append((task, members, inputs))
        return prepared

    def generate_and_embed(
        self, groups: Sequence[tuple[Task, list[int], Any]], answers: dict[str, list[Any]]
    ) -> None:
        """Fill `generation` and `embedding` of the prepared groups (`prepared_groups`)."""
        for task, members, inputs in groups:
            if task.is_embedding:
                vectors = self.predictor.vectors(task, inputs)
                for i, vector in zip(members, vectors.tolist(), strict=True):
                    answers["embedding"][i] = vector
            else:
                generations = self.predictor.decode(inputs)
                for i, answer in zip(members, generations, strict=True):
                    answers["generation"][i] = answer
