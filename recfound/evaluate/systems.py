"""What the evaluation protocol asks of a compared model ("system"), and the LLM-backed one.

A system answers generative rows with text and scores each embedding row's candidate pool
(positives first, then negatives). RecFound, RecFound without merge and the base model without
finetuning are `LLMSystem`s; the other baselines live in recfound.evaluate.baselines.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from recfound.tasks import Kind, Task

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from recfound.model.unified import RecFoundModel

Row = Mapping[str, Any]
# (texts, instruction) -> unit-norm vectors, one row per text
EmbedFn = Callable[[list[str], str], np.ndarray]
# Passages (pool items, catalogue items) are embedded without an instruction, as in training.
PASSAGE_INSTRUCTION = ""


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


def cosine_pools(rows: Sequence[Row], embed: EmbedFn) -> list[np.ndarray]:
    """Cosine similarity of each row's query to each text of its pool.

    Queries are embedded with their row's instruction (grouped by instruction); passages with
    none, as in training (GritLM). Each distinct passage text is embedded once.
    """
    passages = sorted({text for row in rows for text in pool_texts(row)})
    passage_index = {text: i for i, text in enumerate(passages)}
    passage_vectors = embed(passages, PASSAGE_INSTRUCTION)
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


class LLMSystem:
    """A RecFoundModel (base LLM, with or without an adapter) behind the System protocol.

    Generation: the chat-formatted prompt of `recfound.model.prompts.generation_prompt`, greedy,
    routed to the row's task, at most `answer_budgets[task]` new tokens (`max_new_tokens` for a
    task without a budget). Embedding: bidirectional mean-pooled, L2-normalised vectors.
    """

    def __init__(
        self,
        name: str,
        model: RecFoundModel,
        tokenizer: PreTrainedTokenizerBase,
        batch_size: int,
        max_new_tokens: int,
        answer_budgets: Mapping[str, int] | None = None,
    ) -> None:
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.answer_budgets = dict(answer_budgets or {})

    def supports(self, task: Task) -> bool:
        return True

    def generate(self, task: Task, rows: Sequence[Row]) -> list[str]:
        from recfound.model.inference import generate_batch
        from recfound.model.prompts import generation_prompt

        prompts = [generation_prompt(self.tokenizer, r["instruction"], r["input"]) for r in rows]
        budget = self.answer_budgets.get(task.code, self.max_new_tokens)
        return generate_batch(self.model, self.tokenizer, prompts, task.id, budget, self.batch_size)

    @property
    def routes_tasks(self) -> bool:
        """Whether its vectors depend on the task (an adapter routes them); the base model's
        do not, so one catalogue embedding serves every task."""
        return self.model.adapter is not None

    def embedder(self, task: Task, progress: bool = True, batch_size: int | None = None) -> EmbedFn:
        """Texts -> unit vectors routed to `task` (pool scoring and catalogue indexing), in
        batches of `batch_size` (default: the system's)."""
        import torch

        from recfound.model.inference import embed_texts

        def embed(texts: list[str], instruction: str) -> np.ndarray:
            vectors = embed_texts(
                self.model,
                self.tokenizer,
                texts,
                instruction,
                task.id,
                batch_size or self.batch_size,
                progress=progress,
            )
            # The model normalises in its own dtype: in bf16 a norm is off by up to ~0.5 %
            # (8-bit mantissa). Renormalised in float32, a dot product is a cosine again.
            return torch.nn.functional.normalize(vectors.float(), dim=-1).numpy()

        return embed

    def score_pools(self, task: Task, rows: Sequence[Row]) -> list[np.ndarray]:
        return cosine_pools(rows, self.embedder(task))
