"""Stage `build`: raw sources (data/) -> the unified dataset of the tasks the data can feed.

1. Which tasks: those whose raw source is present in data/ (`TASK_SOURCES`), narrowed by
   `build.tasks`; asking for a task whose source is absent is an error naming the source,
   and a data folder that can feed no task fails here, before anything is read.
2. Reads data/ only through recfound.data.readers, one streaming pass per file: item
   metadata (catalogue; AVE and IP selections), ESCI (Q2I, QR, PRP), reviews and ratings
   (compact per-user sequences for U2I, SR, UP, I2I; SA selection), AmazonQA (AP, AG),
   Amazon-Google (PM); only the sources the chosen tasks need. What is dropped is counted
   in the ingest report (recfound/data/ingest.py), and too large a share fails the build.
3. Rows stream out of the task builders (recfound/data/tasks/) to spill files, one per task
   and split, so memory stays bounded whatever `train_per_task` allows; they are checked as
   they pass: a train target that is also a test target, a duplicate id. A task of the
   automatic set that yields no rows in a split is skipped, with the reason.
4. The splits become a DatasetDict (Arrow) in `paths.unified`, written atomically, with
   `build.json` beside it (recfound.data.unified): task set, skipped tasks and why, rows per
   task, source and split, the ingest report and the fingerprint of the raw data read.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets.arrow_writer import ArrowWriter
from rich.console import Console
from rich.table import Table

from recfound.atomic import atomic_dir
from recfound.config import BuildConfig, Config
from recfound.data.ingest import IngestReport
from recfound.data.readers import RawSources, discover_sources, read_amazonqa
from recfound.data.schema import FEATURES, SPLITS
from recfound.data.tasks.catalog import load_catalog
from recfound.data.tasks.common import LETTERS, RowStream, SplitSizes, progress
from recfound.data.tasks.interactions import load_interactions
from recfound.data.tasks.items import AttributeTask, ItemProfileTask, build_i2i, build_prp
from recfound.data.tasks.matching import build_pm
from recfound.data.tasks.qa import QATasks
from recfound.data.tasks.reviews import SentimentTask
from recfound.data.tasks.search import build_q2i, build_qr, load_esci
from recfound.data.tasks.sequences import SequenceTasks
from recfound.data.unified import BUILD_MANIFEST, data_fingerprint
from recfound.errors import RecFoundError
from recfound.tasks import BY_CODE, TASKS

AMAZON_REVIEWS = ("amazon_reviews", "amazon_reviews_2018")
# The raw sources each task can be built from.
TASK_SOURCES: dict[str, tuple[str, ...]] = {
    "U2I": (*AMAZON_REVIEWS, "movielens"),
    "Q2I": ("esci",),
    "I2I": AMAZON_REVIEWS,
    "QR": ("esci",),
    "SR": (*AMAZON_REVIEWS, "movielens"),
    "PRP": ("esci",),
    "SA": AMAZON_REVIEWS,
    "AVE": AMAZON_REVIEWS,
    "PM": ("amazon_google",),
    "UP": (*AMAZON_REVIEWS, "movielens"),
    "IP": AMAZON_REVIEWS,
    "AP": ("amazonqa",),
    "AG": ("amazonqa",),
}
# The file layout of `datasets.Dataset.save_to_disk` (one data file per split).
DATA_FILE = "data-00000-of-00001.arrow"
DATASET_STATE_FILE = "state.json"
DATASET_INFO_FILE = "dataset_info.json"
DATASET_DICT_FILE = "dataset_dict.json"
SEQUENCE_TASKS = ("U2I", "SR", "UP")
INTERACTION_TASKS = (*SEQUENCE_TASKS, "I2I", "SA")


class BuildError(RecFoundError):
    """The unified rows break a rule; names the task, split, row (when one) and the reason."""

    def __init__(self, task: str, split: str, reason: str, row: int | None = None) -> None:
        self.task, self.split, self.row, self.reason = task, split, row, reason
        where = f"{task}/{split}" + (f" row {row}" if row is not None else "")
        super().__init__(f"unified dataset, {where}: {reason}")


def _check_config(cfg: BuildConfig) -> None:
    if not 2 <= cfg.sr_candidates <= len(LETTERS):
        raise RecFoundError(
            f"build.sr_candidates must be 2..{len(LETTERS)}, got {cfg.sr_candidates}"
        )
    for name in ("eval_negatives", "hard_negatives", "max_history", "i2i_positives"):
        if getattr(cfg, name) < 1:
            raise RecFoundError(f"build.{name} must be at least 1, got {getattr(cfg, name)}")


def _needs(code: str) -> str:
    return " or ".join(TASK_SOURCES[code])


@dataclass
class TaskPlan:
    """The tasks to build (id order) and, for every other task, why not."""

    tasks: list[str]
    skipped: dict[str, str] = field(default_factory=dict)
    requested: bool = False  # build.tasks named them: an empty task is an error, not a skip


def plan_tasks(present: Sequence[str], wanted: Sequence[str] | None) -> TaskPlan:
    """Which tasks the present sources can feed, narrowed by `wanted` (build.tasks)."""
    feedable = {t.code for t in TASKS if set(TASK_SOURCES[t.code]) & set(present)}
    if wanted is not None:
        missing = [code for code in wanted if code not in feedable]
        if missing:
            raise RecFoundError(
                "build.tasks asks for "
                + "; ".join(f"{code}, which needs {_needs(code)}" for code in missing)
                + f"; sources present in data/: {', '.join(present) or 'none'}"
            )
    plan = TaskPlan([], requested=wanted is not None)
    for task in TASKS:
        if task.code not in feedable:
            plan.skipped[task.code] = f"needs {_needs(task.code)}"
        elif wanted is not None and task.code not in wanted:
            plan.skipped[task.code] = "not in build.tasks"
        else:
            plan.tasks.append(task.code)
    if not plan.tasks:
        raise RecFoundError(
            "no task can be built from the data: sources present: "
            f"{', '.join(present) or 'none'}; every task needs one of amazon_reviews, "
            "amazon_reviews_2018, esci, amazonqa, movielens, amazon_google "
            "(docs/bring-your-own-data.md)"
        )
    return plan


def task_streams(
    sources: RawSources, cfg: BuildConfig, tasks: Sequence[str], report: IngestReport
) -> dict[str, RowStream]:
    """(split, row) streams of `tasks`, reading only the sources they need.

    The sources are read here (the ingest report is complete on return); the rows are made
    lazily as each stream is consumed.
    """
    _check_config(cfg)
    wanted = set(tasks)
    sizes = SplitSizes.of(cfg)
    attributes, profiles = AttributeTask(cfg, sizes), ItemProfileTask(cfg, sizes)
    observers = [o.observe for code, o in (("AVE", attributes), ("IP", profiles)) if code in wanted]
    catalog = load_catalog(sources, cfg, observers=observers, report=report)
    streams: dict[str, RowStream] = {}
    if wanted & {"Q2I", "QR", "PRP"}:
        queries = load_esci(sources, catalog, cfg, report)
        streams["Q2I"] = build_q2i(queries, catalog, cfg, sizes)
        streams["QR"] = build_qr(queries, catalog, cfg, sizes)
        streams["PRP"] = build_prp(queries, catalog, cfg, sizes)
    if wanted & set(INTERACTION_TASKS):
        sentiment = SentimentTask(cfg, sizes)
        log = load_interactions(sources, catalog, (sentiment.observe,), report)
        seqs = log.sequences()
        del log  # the sorted copy is all that is needed from here on
        if wanted & set(SEQUENCE_TASKS):
            seqs.count_short_users(cfg.min_interactions)
        streams.update(SequenceTasks(seqs, catalog, cfg).build(sizes))
        streams["I2I"] = build_i2i(catalog, seqs, cfg, sizes)
        streams["SA"] = sentiment.build()
    if wanted & {"AP", "AG"}:
        qa = QATasks(cfg, sizes)
        for path in sources.amazonqa:
            counts = report.file("amazonqa", path)
            for record in progress(read_amazonqa(path), f"amazonqa {path.name}"):
                counts.read += 1
                qa.observe(record)
        streams["AP"], streams["AG"] = qa.build_ap(), qa.build_ag()
    if "PM" in wanted:
        streams["PM"] = build_pm(sources, cfg, sizes, report)
    if "AVE" in wanted:
        streams["AVE"] = attributes.build()
    if "IP" in wanted:
        streams["IP"] = profiles.build(catalog)
    return {code: streams[code] for code in tasks}


class RowWriter:
    """Spills each task's rows to one JSON Lines file per split, checking them on the way.

    Memory: the test target keys of the current task and 8 bytes of each row id (duplicate
    ids are found by sorting those digests once all rows are written).
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.counts: Counter[tuple[str, str, str]] = Counter()  # (task, source, split) -> rows
        # Per row written: the first 8 bytes of its id, its task, split and index (compact).
        self._digests = array("Q")
        self._task = array("B")
        self._split = array("B")
        self._index = array("L")

    def path(self, code: str, split: str) -> Path:
        return self.directory / f"{code}.{split}.jsonl"

    def rows(self, code: str, split: str) -> int:
        return sum(n for (c, _, s), n in self.counts.items() if (c, s) == (code, split))

    def write(self, code: str, stream: RowStream) -> None:
        """Spill one task's stream; a train row whose target a test row holds is an error."""
        test_keys: dict[str, int] = {}
        handles = {split: self.path(code, split).open("w", encoding="utf-8") for split in SPLITS}
        index: Counter[str] = Counter()
        try:
            for split, row in progress(stream, f"rows {code}"):
                if split == "test":
                    test_keys.setdefault(row["target_key"], index[split])
                elif split == "train" and row["target_key"] in test_keys:
                    raise BuildError(
                        code,
                        "train",
                        f"target {row['target_key']!r} is also the target of test row "
                        f"{test_keys[row['target_key']]}",
                        row=index[split],
                    )
                handles[split].write(json.dumps(row, ensure_ascii=False) + "\n")
                self._digests.append(int(row["id"][:16], 16))
                self._task.append(BY_CODE[code].id)
                self._split.append(SPLITS.index(split))
                self._index.append(index[split])
                self.counts[code, row["source"], split] += 1
                index[split] += 1
        finally:
            for handle in handles.values():
                handle.close()

    def _where(self, position: int) -> tuple[str, str, int]:
        return (
            TASKS[self._task[position]].code,
            SPLITS[self._split[position]],
            self._index[position],
        )

    def check_unique_ids(self, kept: Sequence[str]) -> None:
        """BuildError for the first repeated row id among the kept tasks' rows."""
        digests = np.frombuffer(self._digests, dtype=np.uint64)
        order = np.argsort(digests, kind="stable")
        repeated = np.flatnonzero(digests[order][1:] == digests[order][:-1])
        clashes = sorted((int(order[i + 1]), int(order[i])) for i in repeated.tolist())
        for later, first in clashes:
            (code, split, row), other = self._where(later), self._where(first)
            if code in kept and other[0] in kept:
                raise BuildError(
                    code,
                    split,
                    f"duplicate id (also {other[0]}/{other[1]} row {other[2]}); "
                    "the raw data lists the same record twice",
                    row=row,
                )

    def save(self, tasks: Sequence[str], out_dir: Path) -> None:
        """Write the kept tasks' rows as a `datasets` DatasetDict at `out_dir`, tasks in id
        order within each split, streaming from the spill files (see `write_split`)."""
        for split in SPLITS:
            write_split([self.path(code, split) for code in tasks], out_dir / split, split)
        (out_dir / DATASET_DICT_FILE).write_text(json.dumps({"splits": list(SPLITS)}))


def _spilled_rows(paths: Sequence[Path]) -> Iterator[dict]:
    for path in paths:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line)


def write_split(paths: Sequence[Path], split_dir: Path, split: str) -> None:
    """One split in the layout of `Dataset.save_to_disk`, written row by row.

    The rows go straight from the spill files through `datasets`' ArrowWriter into the one
    data file: nothing is memory-mapped and read back (a save_to_disk of a dataset built
    first would map and copy it whole, and a 1M-review build would hold gigabytes). The two
    small metadata files follow save_to_disk's (tests/test_byod.py compares them with it).
    """
    split_dir.mkdir(parents=True)
    data_file = split_dir / DATA_FILE
    writer = ArrowWriter(features=FEATURES, path=str(data_file))
    try:
        for row in _spilled_rows(paths):
            writer.write(row)
        writer.finalize()
    finally:
        writer.close()
    state = {
        "_data_files": [{"filename": DATA_FILE}],
        # Of the content, not of where it was spilled: the same rows give the same
        # fingerprint, which training's resume check relies on.
        "_fingerprint": _content_hash(paths),
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": split,
    }
    (split_dir / DATASET_STATE_FILE).write_text(json.dumps(state, indent=2, sort_keys=True))
    info = {"citation": "", "description": "", "features": FEATURES.to_dict(), "homepage": ""}
    info["license"] = ""
    (split_dir / DATASET_INFO_FILE).write_text(json.dumps(info, indent=2))


def _content_hash(paths: Sequence[Path]) -> str:
    """A 16-hex-digit hash of the files' bytes, in order (a datasets fingerprint)."""
    digest = hashlib.blake2b(digest_size=8)
    for path in paths:
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass
class BuildResult:
    """What `write_unified` built: the task plan, row counts and the ingest report."""

    plan: TaskPlan
    counts: Counter[tuple[str, str, str]]
    report: IngestReport
    fingerprint: str

    def manifest(self) -> dict[str, Any]:
        """build.json: everything a later stage or a person needs to know about this build."""
        rows: dict[str, dict[str, dict[str, int]]] = {}
        for (code, source, split), n in sorted(self.counts.items()):
            if code in self.plan.tasks:
                rows.setdefault(code, {}).setdefault(source, dict.fromkeys(SPLITS, 0))[split] = n
        return {
            "tasks": self.plan.tasks,
            "skipped": self.plan.skipped,
            "rows": rows,
            "data_fingerprint": self.fingerprint,
            "ingest": self.report.to_json(),
        }


def write_unified(data_dir: str | Path, cfg: BuildConfig, out_dir: str | Path) -> BuildResult:
    """Build the unified dataset of the raw data under `data_dir` into `out_dir` (atomically)."""
    sources = discover_sources(data_dir)
    plan = plan_tasks(sources.present, cfg.tasks)
    report = IngestReport()
    report.ignore(sources.ignored)
    # MovieLens tags are validated by the raw_movie_tags suite but feed no task (yet).
    report.ignore(files.tags for files in sources.movielens if files.tags is not None)
    fingerprint = data_fingerprint(data_dir)
    with tempfile.TemporaryDirectory(prefix="recfound-build-") as spill:
        writer = RowWriter(Path(spill))
        streams = task_streams(sources, cfg, plan.tasks, report)
        report.check(cfg.max_drop_share.model_dump())
        for code in plan.tasks:
            writer.write(code, streams[code])
        del streams  # the builders' state (catalogue, sequences) is not needed any more
        _drop_empty_tasks(plan, writer)
        writer.check_unique_ids(plan.tasks)
        result = BuildResult(plan, writer.counts, report, fingerprint)
        with atomic_dir(out_dir) as tmp:
            writer.save(plan.tasks, tmp)
            (tmp / BUILD_MANIFEST).write_text(
                json.dumps(result.manifest(), indent=2, ensure_ascii=False) + "\n",
                encoding="utf-8",
            )
    return result


def _drop_empty_tasks(plan: TaskPlan, writer: RowWriter) -> None:
    """A task without rows in a split: an error when build.tasks asked for it, else skipped."""
    for code in list(plan.tasks):
        empty = [split for split in SPLITS if not writer.rows(code, split)]
        if not empty:
            continue
        reason = (
            f"no {'/'.join(empty)} samples from {_needs(code)}: too little data for the task "
            "(see docs/bring-your-own-data.md)"
        )
        if plan.requested:
            raise BuildError(code, empty[0], reason)
        plan.tasks.remove(code)
        plan.skipped[code] = reason
    if not plan.tasks:
        raise RecFoundError(
            "no task has samples in every split: "
            + "; ".join(f"{code}: {why}" for code, why in plan.skipped.items() if "samples" in why)
        )


def build_unified(data_dir: str | Path, cfg: BuildConfig) -> datasets.DatasetDict:
    """The unified dataset of the raw data under `data_dir`, in memory (tests, notebooks)."""
    with tempfile.TemporaryDirectory(prefix="recfound-unified-") as tmp:
        out = Path(tmp) / "unified"
        write_unified(data_dir, cfg, out)
        return datasets.load_from_disk(str(out), keep_in_memory=True)


def _tasks_table(result: BuildResult) -> Table:
    table = Table(title="unified dataset: tasks, sources and rows per split")
    for column in ("task", "kind", "source", *SPLITS):
        table.add_column(column, justify="right" if column in SPLITS else "left")
    kinds = {t.code: t.kind.value for t in TASKS}
    for code, by_source in result.manifest()["rows"].items():
        for source, counts in by_source.items():
            table.add_row(code, kinds[code], source, *(f"{counts[s]:,}" for s in SPLITS))
    totals = Counter()
    for (code, _, split), n in result.counts.items():
        if code in result.plan.tasks:
            totals[split] += n
    table.add_row("all", "", "", *(f"{totals[s]:,}" for s in SPLITS))
    return table


def _ingest_table(report: IngestReport) -> Table:
    table = Table(title="ingest report: rows per raw file")
    table.add_column("file", overflow="fold")  # a path is folded, never cut
    for column in ("read", "kept", "dropped", "filtered / notes"):
        table.add_column(column, justify="right" if column in ("read", "kept") else "left")
    for row in report.rows():
        table.add_row(*row)
    return table


def run(cfg: Config) -> None:
    """Stage entry: build the unified dataset into `paths.unified` (replaced atomically)."""
    console = Console()
    started = time.perf_counter()
    result = write_unified(cfg.paths.data, cfg.build, cfg.paths.unified)
    console.print(_ingest_table(result.report))
    if result.report.ignored:
        console.print(f"ignored (not a source file): {', '.join(result.report.ignored)}")
    console.print(_tasks_table(result))
    for code, why in result.plan.skipped.items():
        console.print(f"skipped {code}: {why}")
    console.print(
        f"unified dataset written to {cfg.paths.unified} ({time.perf_counter() - started:.1f} s);"
        f" build report: {Path(cfg.paths.unified) / BUILD_MANIFEST}"
    )
