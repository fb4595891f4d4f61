"""What the evaluation protocol asks of a compared model ("system"), and the LLM-backed one.

A system answers generative rows with text and scores each embedding row's candidate pool
(positives first, then negatives). RecFound, RecFound without merge and the base model without
finetuning are `LLMSystem`s, each a thin adapter over a `recfound.model.predictor.Predictor`
(the CLI, the served model and the index ask the model through it too); the other baselines
live in recfound.evaluate.baselines.

Each embedding row's query is embedded once per system (`QueryVectors`): the sampled pool
scoring and the full-catalogue search (recfound.evaluate.full_catalogue) score the same
vectors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from recfound.model.predictor import PASSAGE_INSTRUCTION, EmbedFn
from recfound.tasks import Kind, Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from recfound.model.predictor import Predictor

Row = Mapping[str, Any]
__all__ = ["PASSAGE_INSTRUCTION", "EmbedFn", "LLMSystem", "QueryVectors", "Row", "System"]


class System(Protocol):
    """A model under evaluation."""

    name: str

    def supports(self, task: Task) -> bool:
        """Whether this system produces answers for `task` (others show as "—")."""
        ...

    def generate(self, task: Task, rows: Sequence[Row]) -> list[str]:
        """Raw text answers to generative rows, in order."""
        ...

    def score_pools(self, task: Task, rows: Sequence[Row]) -> list[np.ndarray]:
        """Per embedding row, scores of `positives + negatives` in that order (higher = closer)."""
        ...


def pool_texts(row: Row) -> list[str]:
    """A row's candidate pool: its positives, then its negatives."""
    return list(row["positives"]) + list(row["negatives"])


def cosine_pools(
    rows: Sequence[Row], embed: EmbedFn, query_vectors: np.ndarray | None = None
) -> list[np.ndarray]:
    """Cosine similarity of each row's query to each text of its pool.

    Queries are embedded with their row's instruction (grouped by instruction), unless their
    vectors are given; passages with none, as in training (GritLM). Each distinct passage text
    is embedded once.
    """
    passages = sorted({text for row in rows for text in pool_texts(row)})
    passage_index = {text: i for i, text in enumerate(passages)}
    passage_vectors = embed(passages, PASSAGE_INSTRUCTION)
    if query_vectors is None:
        query_vectors = embed_queries(rows, embed)
    return [
        passage_vectors[[passage_index[t] for t in pool_texts(row)]] @ query_vectors[i]
        for i, row in enumerate(rows)
    ]


def embed_queries(rows: Sequence[Row], embed: EmbedFn) -> np.ndarray:
    """Each row's query (`input`) as a unit vector, embedded with its row's instruction: one
    call per distinct instruction."""
    by_instruction: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_instruction.setdefault(row["instruction"], []).append(i)
    parts = {
        instruction: embed([rows[i]["input"] for i in indices], instruction)
        for instruction, indices in by_instruction.items()
    }
    dims = {vectors.shape[1] for vectors in parts.values()}
    vectors = np.zeros((len(rows), dims.pop() if dims else 0), dtype=np.float32)
    for instruction, indices in by_instruction.items():
        vectors[indices] = parts[instruction]
    return vectors


def answer_budgets(
    train: Sequence[Row], tokenizer: PreTrainedTokenizerBase, margin: int, cap: int
) -> dict[str, int]:
    """Per generative task code: tokens of its longest TRAIN answer + `margin`, at most `cap`.

    A finetuned model stops at its end-of-turn token, but an untrained one rarely emits it and
    talks until the limit; a letter answer needs one token, a user profile about sixty. Only the
    train split is read, so test answers never shape the evaluation.
    """
    longest: dict[str, int] = {}
    for row in train:
        if row["kind"] == Kind.GENERATIVE:
            n_tokens = len(tokenizer(row["output"], add_special_tokens=False)["input_ids"])
            longest[row["task"]] = max(longest.get(row["task"], 0), n_tokens)
    return {code: min(cap, n_tokens + margin) for code, n_tokens in longest.items()}


class QueryVectors:
    """A system's query vectors per task and rows, embedded on first use and kept for the
    evaluate run: every protocol that needs a row's query vector reuses the first one."""

    def __init__(self) -> None:
        self._kept: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}

    def of(self, task: Task, rows: Sequence[Row], embed: EmbedFn) -> np.ndarray:
        """`embed_queries(rows, embed)`, computed once per (task, row ids)."""
        key = (task.code, tuple(str(row["id"]) for row in rows))
        if key not in self._kept:
            self._kept[key] = embed_queries(rows, embed)
        return self._kept[key]


class LLMSystem:
    """A Predictor (base LLM, with or without an adapter) behind the System protocol.

    Generation: the predictor's (prompt fitted to `train.max_len_prompt`, greedy, routed to the
    row's task), at most `answer_budgets[task]` new tokens (the predictor's
    `evaluate.max_new_tokens` for a task without a budget). Embedding: the predictor's
    float32 unit vectors, queries within `train.max_len_query` and passages within
    `train.max_len_passage` tokens.
    """

    def __init__(
        self, name: str, predictor: Predictor, answer_budgets: Mapping[str, int] | None = None
    ) -> None:
        self.name = name
        self.predictor = predictor
        self.answer_budgets = dict(answer_budgets or {})
        self.queries = QueryVectors()

    def supports(self, task: Task) -> bool:
        return True

    def generate(self, task: Task, rows: Sequence[Row]) -> list[str]:
        from recfound.model.inference import TextInput

        requests = [TextInput(row["input"], row["instruction"]) for row in rows]
        budget = self.answer_budgets.get(task.code)
        return self.predictor.generate(task, requests, budget, progress=True)

    @property
    def routes_tasks(self) -> bool:
        """Whether its vectors depend on the task (an adapter routes them); the base model's
        do not, so one catalogue embedding serves every task."""
        return self.predictor.routes_tasks

    def embedder(self, task: Task, progress: bool = True, batch_size: int | None = None) -> EmbedFn:
        """Texts -> unit vectors routed to `task` (pool scoring and catalogue indexing), in
        batches of `batch_size` (default: the predictor's)."""
        return self.predictor.embedder(task, batch_size, progress)

    def query_vectors(self, task: Task, rows: Sequence[Row]) -> np.ndarray:
        """The rows' query vectors, embedded once per run (`QueryVectors`)."""
        return self.queries.of(task, rows, self.embedder(task))

    def score_pools(self, task: Task, rows: Sequence[Row]) -> list[np.ndarray]:
        return cosine_pools(rows, self.embedder(task), self.query_vectors(task, rows))
