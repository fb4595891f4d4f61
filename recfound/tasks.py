"""The thirteen RecFound tasks: ids, codes, kinds and test metrics (recfound.md §5).

Ids are the reference implementation's; the TMoLE task table and every dataset row use them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Kind(StrEnum):
    EMBEDDING = "embedding"
    GENERATIVE = "generative"


@dataclass(frozen=True)
class Task:
    id: int
    code: str
    kind: Kind
    description: str
    metric: str

    @property
    def is_embedding(self) -> bool:
        return self.kind is Kind.EMBEDDING


TASKS: tuple[Task, ...] = (
    Task(0, "U2I", Kind.EMBEDDING, "user behaviour sequence -> next item", "MRR@20"),
    Task(1, "Q2I", Kind.EMBEDDING, "search query -> matching product", "MRR@20"),
    Task(2, "I2I", Kind.EMBEDDING, "item description -> related items", "NDCG@20"),
    Task(3, "QR", Kind.GENERATIVE, "rewrite a raw query into a better one", "BERTScore F1"),
    Task(4, "SR", Kind.GENERATIVE, "history + 20 lettered candidates -> next item", "Recall@1"),
    Task(5, "PRP", Kind.GENERATIVE, "two products -> relation", "macro-F1"),
    Task(6, "SA", Kind.GENERATIVE, "review -> sentiment / rating", "macro-F1"),
    Task(7, "AVE", Kind.GENERATIVE, "product text -> attribute/value/source JSON", "F1"),
    Task(8, "PM", Kind.GENERATIVE, "two listings -> same product? yes/no", "F1 (yes)"),
    Task(9, "UP", Kind.GENERATIVE, "behaviour history -> user profile", "BERTScore F1"),
    Task(10, "IP", Kind.GENERATIVE, "item information -> item profile", "BERTScore F1"),
    Task(11, "AP", Kind.GENERATIVE, "question + reviews -> answerable? yes/no", "F1 (yes)"),
    Task(12, "AG", Kind.GENERATIVE, "question + reviews -> answer", "BERTScore F1"),
)

NUM_TASKS = len(TASKS)
BY_CODE: dict[str, Task] = {t.code: t for t in TASKS}
EMBEDDING_TASK_IDS: tuple[int, ...] = tuple(t.id for t in TASKS if t.is_embedding)
GENERATIVE_TASK_IDS: tuple[int, ...] = tuple(t.id for t in TASKS if not t.is_embedding)


def task_by_code(code: str) -> Task:
    """Look a task up by its code (case-insensitive); the error lists the valid codes."""
    try:
        return BY_CODE[code.upper()]
    except KeyError:
        raise KeyError(f"unknown task {code!r}; expected one of {', '.join(BY_CODE)}") from None
