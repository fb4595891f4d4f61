"""Answer modes of the label tasks: how an LLM system's answer to a row with options is chosen.

The label tasks list their options (SR 20 lettered candidates, SA five star ratings, PRP three
relations, AP and PM yes/no: the rows' `options`). Besides free generation, an answer can be
decided among them:

- `free`: greedy generation, parsed (the paper's reference; the headline and Tables 2-4).
- `options`: each option's label as training renders the answer (SR/SA/PRP a letter, AP/PM
  yes/no, with the end-of-turn marks) scored by its log-likelihood after the fitted prompt
  (`Predictor.score_options`, a sum: every label is one token); the likeliest is the answer.
  It asks whether the model ranks the right label first even where greedy decoding starts
  with one default letter.
- `option_text`: each option's listed text instead of its label (SR: the candidate's title, SA
  "3 stars", PRP the relation's wording), mean log-probability per token (titles differ in
  length; a sum would pick the shortest). Measures what the language model knows of the
  options, apart from the letter it was taught to write. AP and PM list no text: not scored.
- `embedding`: SR only, from the unified model's embedding side: the SR input's history (the
  same numbered titles a U2I query holds) embedded as a U2I query with U2I's instruction, the
  20 candidates as items (their catalogue passage, as U2I embeds items; the listed title where
  the catalogue has none), routed to U2I; the candidate of highest cosine is the answer. Needs
  U2I in the model's task set.

Mode m of system S is evaluated as the system `S@m` (`mode_system_name`) on the same test rows,
its chosen label scored by the task's own parser and metric. So it gets intervals, evidence,
predictions and a paired comparison like any other system (comparisons.json: RecFound's free
answer minus it); results.md keeps the paper's tables free-generation only and shows the modes
in a section of their own (recfound.evaluate.report `answer_mode_sections`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from recfound.data.instructions import instruction_for
from recfound.data.tasks.sequences import sr_history
from recfound.errors import DataError
from recfound.evaluate.metrics import PairScorer
from recfound.evaluate.protocol import SystemRun, evaluate_system
from recfound.evaluate.systems import PASSAGE_INSTRUCTION, LLMSystem, Row
from recfound.model.inference import TextInput
from recfound.tasks import BY_CODE, Task

FREE = "free"
ANSWER_MODES: tuple[str, ...] = (FREE, "options", "option_text", "embedding")
# The tasks whose rows list options (the unified schema's `options`), and per mode those it
# answers.
LABEL_TASKS: tuple[str, ...] = ("SR", "PRP", "SA", "PM", "AP")
MODE_TASKS: dict[str, tuple[str, ...]] = {
    "options": LABEL_TASKS,
    "option_text": ("SR", "PRP", "SA"),  # AP and PM list no text beside yes/no
    "embedding": ("SR",),
}
# Between a system's name and its mode: "recfound@options".
MODE_SEPARATOR = "@"
# How results.md names each mode.
MODE_TITLES: dict[str, str] = {
    FREE: "free generation",
    "options": "option labels scored",
    "option_text": "option texts scored",
    "embedding": "SR by embedding",
}
# The embedding mode's query side.
U2I = BY_CODE["U2I"]


def mode_system_name(system: str, mode: str) -> str:
    """`system@mode`, the name under which a mode's results are kept."""
    return f"{system}{MODE_SEPARATOR}{mode}"


def split_mode_name(name: str) -> tuple[str, str]:
    """(system, mode) of a result's name; a plain system name is its free mode."""
    system, _, mode = name.partition(MODE_SEPARATOR)
    return system, mode or FREE


def listed_texts(input: str, labels: Sequence[str]) -> list[str] | None:
    """The text listed after each label in `input` ("A. text" per line, or ", "-separated on
    one line as SA lists its ratings), in the order of `labels`; None when the input does not
    list all of them in that order.

    The last listing of the labels wins, so an earlier "A. …" run of lines does not shadow
    the options block at the end of the input.
    """
    if not labels:
        return None
    parts = [rf"(?:^|\s){re.escape(labels[0])}\. (.+?)"]
    parts += [rf"(?:\n|, ){re.escape(label)}\. (.+?)" for label in labels[1:]]
    pattern = re.compile("".join(parts) + r"$", re.MULTILINE)
    matches = list(pattern.finditer(input))
    found = matches[-1] if matches else None
    return [text.strip() for text in found.groups()] if found else None


class ModeSystem:
    """An LLM system answering its label tasks in one answer mode (module doc): a System whose
    `generate` returns the chosen option's label; `seconds` is the time it took, per task."""

    def __init__(
        self, system: LLMSystem, mode: str, passages: Mapping[str, str] | None = None
    ) -> None:
        """`passages`: item id -> catalogue passage, for the embedding mode's candidates."""
        if mode not in MODE_TASKS:
            raise ValueError(f"no answer mode {mode!r}; expected one of {', '.join(MODE_TASKS)}")
        self.system = system
        self.mode = mode
        self.name = mode_system_name(system.name, mode)
        self.passages = dict(passages or {})
        self.seconds: dict[str, float] = {}

    @property
    def predictor(self):
        return self.system.predictor

    def supports(self, task: Task) -> bool:
        if task.code not in MODE_TASKS[self.mode]:
            return False
        if self.mode == "embedding":
            codes = self.predictor.task_codes
            return codes is None or U2I.code in codes
        return True

    def generate(self, task: Task, rows: Sequence[Row]) -> list[str]:
        start = time.perf_counter()
        if self.mode == "embedding":
            answers = self._closest_candidates(rows)
        else:
            answers = self._likeliest_options(task, rows)
        self.seconds[task.code] = time.perf_counter() - start
        return answers

    def score_pools(self, task: Task, rows: Sequence[Row]) -> list[np.ndarray]:
        raise ValueError(f"{self.name} answers label tasks only, not {task.code}")

    def _likeliest_options(self, task: Task, rows: Sequence[Row]) -> list[str]:
        """The option whose label (mode `options`) or listed text (`option_text`) the model
        finds likeliest after the row's prompt; "" (invalid) for a row whose texts are not
        listed in its input."""
        texts: list[list[str] | None] = [
            list(row["options"])
            if self.mode == "options"
            else listed_texts(row["input"], row["options"])
            for row in rows
        ]
        scored = [i for i, t in enumerate(texts) if t]
        requests = [TextInput(rows[i]["input"], rows[i]["instruction"]) for i in scored]
        scores = self.predictor.score_options(
            task,
            requests,
            [texts[i] for i in scored],
            per_token=self.mode == "option_text",
            progress=True,
        )
        answers = [""] * len(rows)
        for i, row_scores in zip(scored, scores, strict=True):
            answers[i] = rows[i]["options"][int(np.argmax(row_scores))]
        return answers

    def _closest_candidates(self, rows: Sequence[Row]) -> list[str]:
        """Per SR row, the letter of the candidate closest to the history embedded as a U2I
        query; "" (invalid) for a row whose input holds no history or candidate list."""
        answers = [""] * len(rows)
        histories = [sr_history(row["input"]) for row in rows]
        candidates = [self._candidate_texts(row) for row in rows]
        usable = [i for i in range(len(rows)) if histories[i] is not None and candidates[i]]
        if not usable:
            return answers
        queries = [
            TextInput(histories[i], instruction_for(U2I.code, str(rows[i].get("source", ""))))
            for i in usable
        ]
        query_vectors = self.predictor.embed(U2I, queries, progress=True)
        unique = sorted({text for i in usable for text in candidates[i]})
        index = {text: j for j, text in enumerate(unique)}
        items = [TextInput(text, PASSAGE_INSTRUCTION) for text in unique]
        item_vectors = self.predictor.embed(U2I, items, progress=True)
        for query, i in zip(query_vectors, usable, strict=True):
            cosines = item_vectors[[index[t] for t in candidates[i]]] @ query
            answers[i] = rows[i]["options"][int(np.argmax(cosines))]
        return answers

    def _candidate_texts(self, row: Row) -> list[str] | None:
        """Each SR candidate as U2I embeds items: its catalogue passage, else its listed
        title; None when the row lists no candidates."""
        titles = listed_texts(row["input"], row["options"])
        if titles is None:
            return None
        ids = list(row.get("option_ids") or [])
        if len(ids) != len(titles):
            return titles
        return [self.passages.get(item, title) for item, title in zip(ids, titles, strict=True)]


def catalogue_passages(unified: str | Path) -> dict[str, str]:
    """item id -> passage of the build's catalogue; {} when there is none (candidates are then
    embedded by their titles)."""
    from recfound.data.catalogue import read_catalogue

    try:
        table = read_catalogue(unified)
    except DataError:
        return {}
    return dict(zip(table["item_id"].to_pylist(), table["passage"].to_pylist(), strict=True))


def evaluate_modes(
    system: LLMSystem,
    modes: Sequence[str],
    test: Mapping[str, Sequence[Row]],
    scorer: PairScorer,
    cutoff: int,
    source: Path,
    passages: Mapping[str, str] | None = None,
) -> dict[str, SystemRun]:
    """The runs of `system` in each of `modes` other than free (`S@mode` -> run), on the label
    tasks of `test` the mode answers; modes with nothing to answer are left out. Prints the
    seconds each mode took."""
    runs = {}
    for mode in modes:
        if mode == FREE:
            continue
        mode_system = ModeSystem(system, mode, passages)
        run = evaluate_system(mode_system, test, scorer, cutoff, source)
        if run.results:
            runs[mode_system.name] = run
            seconds = ", ".join(f"{code} {s:.1f}" for code, s in mode_system.seconds.items())
            total = sum(mode_system.seconds.values())
            print(f"answer mode {mode_system.name}: {total:.1f} s ({seconds})")
    return runs
