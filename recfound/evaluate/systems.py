"""What the evaluation protocol asks of a compared model ("system"), and the LLM-backed one.

A system answers generative rows with text and scores each embedding row's candidate pool
(positives first, then negatives). RecFound, RecFound without merge and the base model without
finetuning are `LLMSystem`s, each a thin adapter over a `recfound.model.predictor.Predictor`
(the CLI, the served model and the index ask the model through it too); the other baselines
live in recfound.evaluate.baselines.

Each embedding row's query is embedded once per system (`QueryVectors`): the sampled pool
scoring and the full-catalogue search (recfound.evaluate.full_catalogue) score the same
vectors. Each passage likewise (`PassageVectors`): every pool passage is a catalogue item, so
a system whose catalogue vectors are at hand (RecFound: the index stage's; base and MiniLM: the
catalogue they embed for the full-catalogue search) scores its pools with those vectors and
embeds only passages outside the catalogue.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from recfound.model.predictor import PASSAGE_INSTRUCTION, EmbedFn
from recfound.tasks import Kind, Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from recfound.model.predictor import Predictor

Row = Mapping[str, Any]
# texts -> float32 unit vectors of those texts as passages (no instruction), one row per text
PassageFn = Callable[[list[str]], np.ndarray]
__all__ = [
    "PASSAGE_INSTRUCTION",
    "EmbedFn",
    "LLMSystem",
    "PassageVectors",
    "QueryVectors",
    "Row",
    "System",
]


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


def pool_ids(row: Row) -> list[str]:
    """The item ids of a row's candidate pool, in `pool_texts` order."""
    return list(row["positive_ids"]) + list(row["negative_ids"])


def cosine_pools(
    rows: Sequence[Row],
    embed: EmbedFn,
    query_vectors: np.ndarray | None = None,
    passage_vectors: PassageFn | None = None,
) -> list[np.ndarray]:
    """Cosine similarity of each row's query to each text of its pool.

    Queries are embedded with their row's instruction (grouped by instruction), unless their
    vectors are given; passages with none, as in training (GritLM), through `passage_vectors`
    when given (vectors already at hand, `PassageVectors`). Each distinct passage text is
    embedded once.
    """
    passages = sorted({text for row in rows for text in pool_texts(row)})
    passage_index = {text: i for i, text in enumerate(passages)}
    if passage_vectors is None:
        passage_vectors = partial(embed_passages, embed)
    vectors = passage_vectors(passages)
    if query_vectors is None:
        query_vectors = embed_queries(rows, embed)
    return [
        vectors[[passage_index[t] for t in pool_texts(row)]] @ query_vectors[i]
        for i, row in enumerate(rows)
    ]


def embed_passages(embed: EmbedFn, texts: list[str]) -> np.ndarray:
    """`texts` embedded as passages: without an instruction, as in training (GritLM)."""
    return embed(texts, PASSAGE_INSTRUCTION)


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


class PassageVectors:
    """A system's passage vectors by text, per routing key (the task code for a system that
    routes by task, "" for one that does not): the catalogue vectors it was given (`keep`),
    then whatever it had to embed. `of` embeds only the texts it does not hold yet."""

    def __init__(self) -> None:
        self._kept: dict[str, dict[str, np.ndarray]] = {}

    def keep(self, key: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        """Hold `vectors` (row i: texts[i] as a passage) for routing key `key`."""
        if len(texts) != len(vectors):
            raise ValueError(f"{len(vectors)} vectors for {len(texts)} passages")
        held = self._kept.setdefault(key, {})
        held.update(zip(texts, np.asarray(vectors, dtype=np.float32), strict=True))

    def of(self, key: str, texts: Sequence[str], embed: PassageFn) -> np.ndarray:
        """Unit vectors of `texts`, embedding (and keeping) only those not held for `key`."""
        held = self._kept.setdefault(key, {})
        missing = sorted({text for text in texts if text not in held})
        if missing:
            held.update(zip(missing, embed(missing), strict=True))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([held[text] for text in texts])


def routing_key(system: Any, task: Task) -> str:
    """The key a system's task-dependent vectors are held under: the task's code when the
    system routes by task (TMoLE routes passages too), else "" (one set serves every task)."""
    return task.code if getattr(system, "routes_tasks", True) else ""


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
        self.passages = PassageVectors()

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
        return score_pools_once(self, task, rows)


def score_pools_once(system: Any, task: Task, rows: Sequence[Row]) -> list[np.ndarray]:
    """`cosine_pools` of a system with `query_vectors`, `passages` (`PassageVectors`) and
    `embedder`: each query and each passage embedded at most once per evaluate run."""
    embed = system.embedder(task)
    as_passages = partial(embed_passages, embed)
    key = routing_key(system, task)
    return cosine_pools(
        rows,
        embed,
        system.query_vectors(task, rows),
        lambda texts: system.passages.of(key, texts, as_passages),
    )
