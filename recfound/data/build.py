"""Stage `build`: raw sources (data/) -> the unified dataset of the tasks the data can feed.

1. Which tasks (recfound/data/task_plan.py): those whose raw source is present in data/,
   narrowed by `build.tasks`; a data folder that can feed no task fails here, before
   anything is read.
2. Reads data/ only through recfound.data.readers, one streaming pass per file: item
   metadata (catalogue; AVE and IP selections), ESCI (Q2I, QR, PRP), reviews and ratings
   (compact per-user sequences for U2I, SR, UP, I2I; SA selection), AmazonQA (AP, AG),
   Amazon-Google (PM); only the sources the chosen tasks need. What is dropped is counted
   in the ingest report (recfound/data/ingest.py), and too large a share fails the build.
3. Rows stream out of the task builders (recfound/data/tasks/) to spill files and are
   checked on the way (recfound/data/rows.py), so memory stays bounded whatever
   `train_per_task` allows. A task of the automatic set that yields no rows in a split is
   skipped, with the reason.
4. The splits are written in `datasets`' save_to_disk layout to `paths.unified`, atomically,
   with `build.json` beside them (recfound.data.unified): task set, skipped tasks and why,
   rows per task, source and split, the ingest report and the fingerprint of the raw data;
   and the catalogue every embedding task retrieves from, with each U2I row's seen items
   and every kept user's whole sequence (recfound.data.catalogue), for full-catalogue
   retrieval and the leave-one-out protocol.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from rich.table import Table

from recfound.atomic import atomic_dir
from recfound.config import BuildConfig, Config
from recfound.data.bundled import DataKind, caps_for, data_kind
from recfound.data.catalogue import CatalogueOutputs
from recfound.data.ingest import IngestReport
from recfound.data.instructions import trained_instructions
from recfound.data.readers import (
    RawSources,
    discover_sources,
    line_limit,
    read_amazonqa,
    refuse_copies,
)
from recfound.data.rows import BuildError, RowWriter
from recfound.data.schema import SPLITS
from recfound.data.task_plan import TaskPlan, needed_sources, plan_tasks
from recfound.data.tasks.catalog import load_catalog
from recfound.data.tasks.common import LETTERS, RowStream, SplitSizes, progress
from recfound.data.tasks.interactions import MOVIELENS, load_interactions
from recfound.data.tasks.items import AttributeTask, ItemProfileTask, build_i2i, build_prp
from recfound.data.tasks.matching import build_pm
from recfound.data.tasks.qa import QATasks
from recfound.data.tasks.reviews import SentimentTask
from recfound.data.tasks.search import build_q2i, build_qr, load_esci
from recfound.data.tasks.sequences import SequenceTasks
from recfound.data.unified import BUILD_MANIFEST, data_fingerprint
from recfound.errors import RecFoundError
from recfound.progress import console as output_console
from recfound.tasks import TASKS

SEQUENCE_TASKS = ("U2I", "SR", "UP")
INTERACTION_TASKS = (*SEQUENCE_TASKS, "I2I", "SA")


def _check_config(cfg: BuildConfig) -> None:
    if not 2 <= cfg.sr_candidates <= len(LETTERS):
        raise RecFoundError(
            f"build.sr_candidates must be 2..{len(LETTERS)}, got {cfg.sr_candidates}"
        )
    for name in ("eval_negatives", "hard_negatives", "max_history", "i2i_positives"):
        if getattr(cfg, name) < 1:
            raise RecFoundError(f"build.{name} must be at least 1, got {getattr(cfg, name)}")


def task_streams(
    sources: RawSources,
    cfg: BuildConfig,
    tasks: Sequence[str],
    report: IngestReport,
    outputs: CatalogueOutputs | None = None,
) -> dict[str, RowStream]:
    """(split, row) streams of `tasks`, reading only the sources they need.

    The sources are read here (the ingest report is complete on return); the rows are made
    lazily as each stream is consumed. `outputs`, when given, gets the catalogue now and
    records each U2I row's history position as the stream yields it.
    """
    _check_config(cfg)
    wanted = set(tasks)
    sizes = SplitSizes.of(cfg)
    attributes, profiles = AttributeTask(cfg, sizes), ItemProfileTask(cfg, sizes)
    observers = [o.observe for code, o in (("AVE", attributes), ("IP", profiles)) if code in wanted]
    catalog = load_catalog(sources, cfg, observers=observers, report=report)
    if outputs is not None:
        outputs.write_items(catalog)
    streams: dict[str, RowStream] = {}
    if wanted & {"Q2I", "QR", "PRP"}:
        queries = load_esci(sources, catalog, cfg, report)
        streams["Q2I"] = build_q2i(queries, catalog, cfg, SplitSizes.of(cfg, "Q2I"))
        streams["QR"] = build_qr(queries, catalog, cfg, sizes)
        streams["PRP"] = build_prp(queries, catalog, cfg, sizes)
    if wanted & set(INTERACTION_TASKS):
        sentiment = SentimentTask(cfg, sizes)
        log = load_interactions(sources, catalog, (sentiment.observe,), report)
        seqs = log.sequences()
        del log  # the sorted copy is all that is needed from here on
        if wanted & set(SEQUENCE_TASKS):
            seqs.count_short_users(cfg.min_interactions)
            if outputs is not None:  # every kept user, uncapped: the leave-one-out protocol
                outputs.write_sequences(seqs, cfg.min_interactions)
        row_observers = (outputs.observe_row,) if outputs is not None else ()
        streams.update(SequenceTasks(seqs, catalog, cfg, row_observers).build())
        streams["I2I"] = build_i2i(catalog, seqs, cfg, SplitSizes.of(cfg, "I2I"))
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


@dataclass
class BuildResult:
    """What `write_unified` built: the task plan, row counts and the ingest report."""

    plan: TaskPlan
    counts: Counter[tuple[str, str, str]]
    report: IngestReport
    fingerprint: str
    caps: dict[str, int | None]  # rows per task and split allowed (build.*_per_task or sample_caps)
    kind: DataKind  # the bundled sample (its caps) or a user's data (build.*_per_task)
    # sequences.parquet: file, users, interactions, digest (None: no sequence task was built)
    sequences: dict[str, Any] | None = None

    def manifest(self) -> dict[str, Any]:
        """build.json: everything a later stage or a person needs to know about this build."""
        rows: dict[str, dict[str, dict[str, int]]] = {}
        for (code, source, split), n in sorted(self.counts.items()):
            if code in self.plan.tasks:
                rows.setdefault(code, {}).setdefault(source, dict.fromkeys(SPLITS, 0))[split] = n
        return {
            "tasks": self.plan.tasks,
            "data": {"bundled_sample": self.kind.bundled_sample, "why": self.kind.why},
            "caps": self.caps,
            "skipped": self.plan.skipped,
            "rows": rows,
            "instructions": trained_instructions(rows),  # inference's default per task
            "data_fingerprint": self.fingerprint,
            "ingest": self.report.to_json(),
            **({"sequences": self.sequences} if self.sequences is not None else {}),
        }


def _note_releases(sources: RawSources, report: IngestReport) -> None:
    """Record MovieLens sets read side by side: each keeps its own id space (scoped_id), so
    the summary must say that their users and movies are never matched across sets."""
    variants = [files.variant for files in sources.movielens]
    if len(variants) > 1:
        report.keep_apart(MOVIELENS, variants)


def write_unified(data_dir: str | Path, cfg: BuildConfig, out_dir: str | Path) -> BuildResult:
    """Build the unified dataset of the raw data under `data_dir` into `out_dir` (atomically),
    with the bundled sample's caps when `data_dir` is the bundled sample (recfound.data.bundled)."""
    kind = data_kind(data_dir)
    cfg = caps_for(cfg, kind)
    sources = discover_sources(data_dir)
    plan = plan_tasks(sources.present, cfg.tasks)
    refuse_copies(sources)
    report = IngestReport()
    report.ignore(sources.ignored)
    # MovieLens tags are validated by the raw_movie_tags suite but feed no task (yet).
    report.ignore(files.tags for files in sources.movielens if files.tags is not None)
    _note_releases(sources, report)
    fingerprint = data_fingerprint(data_dir)
    with (
        line_limit(cfg.max_line_bytes),
        tempfile.TemporaryDirectory(prefix="recfound-build-") as spill,
    ):
        writer = RowWriter(Path(spill))
        outputs = CatalogueOutputs(Path(spill) / "catalogue")
        streams = task_streams(sources, cfg, plan.tasks, report, outputs)
        report.check(cfg.max_drop_share.model_dump())
        for code in plan.tasks:
            writer.write(code, streams[code])
        del streams  # the builders' state (catalogue, sequences) is not needed any more
        _drop_empty_tasks(plan, writer)
        writer.check_unique_ids(plan.tasks)
        caps = {split: getattr(cfg, f"{split}_per_task") for split in SPLITS}
        caps["embedding_test"] = cfg.embedding_test_per_task
        result = BuildResult(
            plan, writer.counts, report, fingerprint, caps, kind, outputs.sequences
        )
        with atomic_dir(out_dir) as tmp:
            writer.save(plan.tasks, tmp)
            outputs.save(tmp, with_seen="U2I" in plan.tasks)
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
            f"no {'/'.join(empty)} samples from {needed_sources(code)}: too little data for "
            "the task (see docs/bring-your-own-data.md)"
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


def caps_line(result: BuildResult, data_dir: str | Path) -> str:
    """Which caps the build applied, and why: the bundled sample's, or the user's settings."""
    train, validation = result.caps["train"], result.caps["validation"]
    capped = ", ".join(
        f"{split} {n}" for split, n in (("train", train), ("validation", validation)) if n
    )
    if result.kind.bundled_sample:
        return (
            f"{data_dir} is the bundled sample ({result.kind.why}): its caps "
            f"build.sample_caps apply, {capped} rows per task (your own data is built whole)"
        )
    if capped:
        return (
            f"{data_dir} is your data ({result.kind.why}): capped by params.yaml "
            f"build.*_per_task, {capped} rows per task (null keeps every row the data yields)"
        )
    return (
        f"{data_dir} is your data ({result.kind.why}): every row it yields is kept "
        "(build.train_per_task and validation_per_task are null)"
    )


def run(cfg: Config) -> None:
    """Stage entry: build the unified dataset into `paths.unified` (replaced atomically)."""
    console = output_console()
    started = time.perf_counter()
    result = write_unified(cfg.paths.data, cfg.build, cfg.paths.unified)
    console.print(_ingest_table(result.report))
    if result.report.ignored:
        console.print(f"ignored (not a source file): {', '.join(result.report.ignored)}")
    for remark in result.report.remarks():
        console.print(remark)
    console.print(_tasks_table(result))
    for code, why in result.plan.skipped.items():
        console.print(f"skipped {code}: {why}")
    console.print(caps_line(result, cfg.paths.data))
    console.print(
        f"unified dataset written to {cfg.paths.unified} ({time.perf_counter() - started:.1f} s);"
        f" build report: {Path(cfg.paths.unified) / BUILD_MANIFEST}"
    )
