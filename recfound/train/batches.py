"""From the unified dataset to tokenised training batches.

* The task set is whatever the dataset holds (recfound.data.unified.present_tasks): the two
  groups (embedding / generative) hold the present tasks of their kind, and either may be
  empty (a generative-only dataset has no embedding part in any batch).
* `EpochSampler` turns S2Sched's per-task counts into concrete rows: each task walks a seeded
  permutation of its rows (no replacement); a group starts a new epoch, reshuffling all its
  tasks, when it cannot fill its slots from unseen rows. Permutations depend only on
  (seed, task, epoch), so every rank draws the same rows.
* `split_step` deals one step's rows out to (micro-batch, rank) chunks, each with exactly the
  configured slots per group, so every rank runs the same shapes (InfoNCE gathers across ranks).
* `BatchEncoder` formats and tokenises rows with recfound.model.prompts (the one formatter):
  embedding rows -> query (with instruction), 1 positive, group_size-1 hard negatives;
  generative rows -> prompt + response, all tasks in one batch with a per-sample `task_ids`
  (TMoLE routes each sample by its own id; recfound.train.objective splits the per-sample losses
  by task).
* Passages per draw: with `draw=None` (validation losses) an embedding row always gives its
  first positive and first group_size-1 negatives, so successive losses stay comparable. With an
  integer draw key (the training step) it gives one positive and group_size-1 distinct hard
  negatives chosen at random, as the authors do each time a row is used. The choice comes from
  a generator seeded by (seed, draw, row index) alone, so a resumed run redraws exactly the same
  passages without any sampler state in the checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from recfound.config import TrainConfig
from recfound.errors import DataError
from recfound.model import prompts
from recfound.tasks import TASKS
from recfound.train.logq import PassageLogQ
from recfound.train.s2sched import task_groups

Batch = dict[str, Any]
# Key of an embedding batch's (Q·group_size,) log Q per passage, present when the encoder was
# given a PassageLogQ (training with `train.logq_correction`; recfound.train.logq).
PASSAGE_LOG_Q = "passage_log_q"


def rows_by_task(
    split: datasets.Dataset, task_ids: Iterable[int] | None = None
) -> dict[int, np.ndarray]:
    """Row indices of `split` per task id, in row order.

    Keys: `task_ids` (each, possibly with no rows), or by default the tasks `split` holds.
    """
    column = np.asarray(split["task_id"], dtype=np.int64)
    keys = sorted(set(column.tolist())) if task_ids is None else list(task_ids)
    return {t: np.flatnonzero(column == t) for t in keys}


def validation_rows(
    split: datasets.Dataset, n_per_task: int, seed: int, task_ids: Iterable[int] | None = None
) -> dict[int, np.ndarray]:
    """A fixed, seeded choice of up to `n_per_task` rows per task (S2Sched's validation batch).

    The same rows every time, so successive validation losses are comparable. Tasks: as in
    `rows_by_task`.
    """
    chosen = {}
    for task, rows in rows_by_task(split, task_ids).items():
        rng = np.random.default_rng([seed, task])
        chosen[task] = np.sort(rng.permutation(rows)[:n_per_task])
    return chosen


def length_groups(lengths: Sequence[int], max_padding_share: float) -> list[list[int]]:
    """Indices of `lengths` in batches whose padding stays within `max_padding_share`.

    Longest first; a row joins the current batch while its padding share
    1 − Σ len / (n · max len) stays ≤ `max_padding_share`, else it starts the next batch.
    0 gives one batch per distinct length, 1 a single batch. Each batch lists its indices in
    ascending order, so a batch of equal lengths keeps the rows' order.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    longest = total = 0
    for i in order:
        n = len(groups[-1]) + 1 if groups else 0
        if groups and 1 - (total + lengths[i]) / (n * longest) <= max_padding_share:
            groups[-1].append(i)
            total += lengths[i]
            continue
        groups.append([i])
        longest = total = lengths[i]
    return [sorted(group) for group in groups]


class EpochSampler:
    """Seeded sampling without replacement per task, with epochs per task group."""

    def __init__(
        self,
        task_rows: Mapping[int, np.ndarray],
        seed: int,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> None:
        """`groups` default: the tasks of `task_rows` split by kind (`task_groups`)."""
        groups = task_groups(task_rows) if groups is None else groups
        self.task_rows = {
            t: np.asarray(task_rows.get(t, []), dtype=np.int64) for g in groups for t in g
        }
        self.groups = tuple(tuple(g) for g in groups)
        self.seed = seed
        self.epoch = [0] * len(self.groups)
        self.position = dict.fromkeys(self.task_rows, 0)

    def sizes(self) -> dict[int, int]:
        """Training rows per task."""
        return {t: int(rows.size) for t, rows in self.task_rows.items()}

    def unseen(self) -> dict[int, int]:
        """Rows of each task not yet drawn in its group's current epoch."""
        return {t: int(rows.size) - self.position[t] for t, rows in self.task_rows.items()}

    def _permutation(self, task: int, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, task, epoch])
        return self.task_rows[task][rng.permutation(self.task_rows[task].size)]

    def draw(self, counts: Mapping[int, int]) -> dict[int, list[int]]:
        """Dataset row indices per task: `counts[t]` rows of task t, unseen ones first.

        When a task asks for more than it has unseen, its group's epoch ends: every task of the
        group reshuffles (a new seeded permutation) and the excess comes from the new epoch.
        """
        drawn: dict[int, list[int]] = {}
        for g, group in enumerate(self.groups):
            excess: dict[int, int] = {}
            for t in group:
                want = int(counts.get(t, 0))
                pos = self.position[t]
                take = min(want, self.task_rows[t].size - pos)
                drawn[t] = self._permutation(t, self.epoch[g])[pos : pos + take].tolist()
                self.position[t] = pos + take
                if want > take:
                    excess[t] = want - take
            if excess:
                self.epoch[g] += 1
                for t in group:
                    self.position[t] = 0
                for t, extra in excess.items():
                    fresh = self._permutation(t, self.epoch[g])[:extra].tolist()
                    drawn[t].extend(fresh)
                    self.position[t] = len(fresh)
        return drawn

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: group epochs and per-task positions."""
        return {
            "seed": self.seed,
            "epoch": list(self.epoch),
            "position": {str(t): p for t, p in self.position.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(f"sampler state has seed {state['seed']}, this run uses {self.seed}")
        self.epoch = [int(e) for e in state["epoch"]]
        self.position = {int(t): int(p) for t, p in state["position"].items()}


def split_step(
    drawn: Mapping[int, Sequence[int]], slots: Sequence[int], chunks: int
) -> list[list[list[int]]]:
    """Deal one step's rows into `chunks` (= grad_accum × world) parts, per group.

    Returns chunks[c][g] = the row indices of group g (0 embedding, 1 generative; `task_groups`)
    for chunk c (task order within a group, tasks spread round-robin over chunks). Each chunk
    gets the same count per group: min(slots[g], rows of the group // chunks); rows beyond that
    (tiny datasets) are dropped so that every rank runs the same shapes. A group with no rows
    (a kind absent from the task set) gets an empty list in every chunk.
    """
    out: list[list[list[int]]] = [[] for _ in range(chunks)]
    for g, group in enumerate(task_groups(drawn)):
        rows = [r for t in group for r in drawn.get(t, [])]
        per_chunk = min(slots[g], len(rows) // chunks)
        for c in range(chunks):
            out[c].append(rows[c::chunks][:per_chunk])
    return out


def chunk_index(micro: int, rank: int, world: int) -> int:
    """Which chunk of `split_step` rank `rank` trains on in micro-batch `micro`."""
    return micro * world + rank


class BatchEncoder:
    """Formats and tokenises rows of one split into the tensors the objective consumes."""

    def __init__(
        self,
        split: datasets.Dataset,
        tokenizer: PreTrainedTokenizerBase,
        cfg: TrainConfig,
        source: str | Path,
        *,
        seed: int = 0,
        log_q: PassageLogQ | None = None,
    ) -> None:
        """`seed`: with the draw key and the row index, what picks a row's passages per draw.
        `log_q`: each embedding batch also carries its passages' log Q (`PASSAGE_LOG_Q`)."""
        self.log_q = log_q
        self.split = split
        self.tokenizer = tokenizer
        self.cfg = cfg
        self.source = Path(source)
        self.seed = seed
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            raise ValueError("the tokenizer has no pad token; set one before training")

    def _rows(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        columns = self.split[[int(i) for i in indices]]
        return [
            dict(zip(columns, values, strict=True))
            for values in zip(*columns.values(), strict=True)
        ]

    def _passages(self, row: dict[str, Any], index: int, draw: int | None) -> list[tuple[str, str]]:
        """[positive, hard negative 1, …, hard negative group_size-1] of embedding row `index`,
        each as (text, item id).

        `draw=None`: the first positive and the first negatives. An int: a seeded random choice
        (negatives distinct), the same for the same (seed, draw, index).
        """
        need = self.cfg.group_size - 1
        if not row["positives"]:
            raise DataError(self.source, f"row {row['id']!r} ({row['task']}): no positive passage")
        if len(row["negatives"]) < need:
            raise DataError(
                self.source,
                f"row {row['id']!r} ({row['task']}): {len(row['negatives'])} negatives, "
                f"train.group_size={self.cfg.group_size} needs {need}",
            )
        for texts, ids in (("positives", "positive_ids"), ("negatives", "negative_ids")):
            if len(row[texts]) != len(row[ids]):
                raise DataError(
                    self.source,
                    f"row {row['id']!r} ({row['task']}): {len(row[texts])} {texts} "
                    f"but {len(row[ids])} {ids}; each passage needs its item id",
                )
        positives = list(zip(row["positives"], row["positive_ids"], strict=True))
        negatives = list(zip(row["negatives"], row["negative_ids"], strict=True))
        if draw is None:
            return [positives[0], *negatives[:need]]
        rng = np.random.default_rng([self.seed, draw, index])
        chosen = rng.choice(len(negatives), size=need, replace=False)
        return [positives[rng.integers(len(positives))], *(negatives[i] for i in chosen)]

    def embedding(self, indices: Sequence[int], *, draw: int | None = None) -> Batch | None:
        """Queries (with instruction) and their group_size passages each, or None if no rows.

        Passages carry no instruction (GritLM) and are routed to their query's task. `draw`:
        None for the fixed first passages (validation), the training step for a random draw
        (module docstring).
        """
        if not indices:
            return None
        rows = self._rows(indices)
        tok, cfg = self.tokenizer, self.cfg
        drawn = [
            passage
            for index, r in zip(indices, rows, strict=True)
            for passage in self._passages(r, int(index), draw)
        ]
        try:
            queries = [
                prompts.encode_embedding(tok, r["instruction"], r["input"], cfg.max_len_query)
                for r in rows
            ]
            passages = [
                prompts.encode_embedding(tok, "", text, cfg.max_len_passage) for text, _ in drawn
            ]
        except ValueError as err:
            raise DataError(self.source, f"rows {[r['id'] for r in rows]}: {err}") from err
        task_ids = torch.tensor([r["task_id"] for r in rows], dtype=torch.long)
        batch = {
            "queries": prompts.collate_embedding(queries, self.pad_id),
            "passages": prompts.collate_embedding(passages, self.pad_id),
            "query_task_ids": task_ids,
            "passage_task_ids": task_ids.repeat_interleave(cfg.group_size),
        }
        if self.log_q is not None:
            batch[PASSAGE_LOG_Q] = self.log_q.of(item for _, item in drawn)
        return batch

    def generative(self, indices: Sequence[int]) -> list[Batch]:
        """The rows of `indices` as collated prompt+response batches with a per-sample
        `task_ids` (tasks mix: TMoLE routes each sample by its own task id); [] if no rows.

        Rows are grouped by length (`length_groups` with `train.max_padding_share`): one
        forward of all rows costs less than one per task, but a 400-token SR prompt would pad
        three 100-token rows to its length and double the work.
        """
        if not indices:
            return []
        rows = self._rows(indices)
        cfg = self.cfg
        examples = [
            prompts.encode_generative(
                self.tokenizer,
                r["instruction"],
                r["input"],
                r["output"],
                cfg.max_len_prompt,
                cfg.max_len_response,
            )
            for r in rows
        ]
        lengths = [len(e.input_ids) for e in examples]
        batches = []
        for group in length_groups(lengths, cfg.max_padding_share):
            batch = prompts.collate_generative([examples[i] for i in group], self.pad_id)
            task_ids = [int(rows[i]["task_id"]) for i in group]
            batch["task_ids"] = torch.tensor(task_ids, dtype=torch.long)
            batches.append(batch)
        return batches

    def micro_batch(
        self,
        embedding_rows: Sequence[int],
        generative_rows: Sequence[int],
        *,
        draw: int | None = None,
    ) -> Batch:
        """The objective's input for one micro-batch of one rank; `draw` as in `embedding`."""
        return {
            "embedding": self.embedding(embedding_rows, draw=draw),
            "generative": self.generative(generative_rows),
        }

    def row_ids(self, indices: Sequence[int]) -> list[str]:
        """The stable `id` column of these rows (for the per-rank sample log)."""
        return [str(x) for x in self.split.select_columns(["id"])[[int(i) for i in indices]]["id"]]


def task_code(task_id: int) -> str:
    """The code of a task id, e.g. 0 -> "U2I"."""
    return TASKS[task_id].code


def move_to(batch: Any, device: torch.device) -> Any:
    """`batch` with every tensor moved to `device` (dicts, lists, None kept as they are)."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [move_to(v, device) for v in batch]
    return batch
