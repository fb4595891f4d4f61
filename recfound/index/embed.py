"""Catalogue passages -> unit-norm float32 vectors, chunk by chunk, with a progress bar.

A catalogue is embedded as the evaluation embeds pool passages: through an embedder
(`Predictor.embedder(task)`, `MiniLMSystem.embedder(task)`) with the passage instruction
(`PASSAGE_INSTRUCTION`, none: GritLM style). For a RecFound model the passage vector depends on
the task it is routed to (TMoLE), so each embedding task (U2I, Q2I, I2I) has its own catalogue
vectors. Chunks of `index.chunk_items` passages bound the memory of tokenised text.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recfound.index.store import unit_rows
from recfound.model.predictor import PASSAGE_INSTRUCTION, EmbedFn
from recfound.progress import progress as progress_bar


def embed_catalogue(
    passages: Sequence[str], embed: EmbedFn, chunk_items: int, progress: bool = True
) -> np.ndarray:
    """(len(passages), d) float32 unit vectors, row i the vector of passages[i]."""
    if not passages:
        raise ValueError("the catalogue has no passages to embed")
    chunks = []
    bar = progress_bar(
        total=len(passages), desc="embed catalogue", unit="item", disable=not progress
    )
    with bar:
        for start in range(0, len(passages), chunk_items):
            chunk = list(passages[start : start + chunk_items])
            chunks.append(np.asarray(embed(chunk, PASSAGE_INSTRUCTION), dtype=np.float32))
            bar.update(len(chunk))
    return unit_rows(np.concatenate(chunks), "catalogue vectors")
