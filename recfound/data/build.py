"""Stage `build`: raw sources (data/) -> the unified 13-task dataset (artifacts/unified).

Reads data/ only through recfound.data.readers, in one streaming pass per file:
item metadata (catalogue; AVE and IP selections), ESCI (Q2I, QR, PRP), reviews and ratings
(compact per-user sequences for U2I, SR, UP, I2I; SA selection), AmazonQA (AP, AG),
Amazon-Google (PM). Rules per task: the modules of recfound/data/tasks/.

Before anything is written the rows are checked; a violation raises BuildError naming the
task, split, row and reason, and the previous output stays as it was (atomic_dir):
a task without rows in a split, a duplicate id, a test target that is also a train target.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

import datasets
from rich.console import Console
from rich.table import Table

from recfound.atomic import atomic_dir
from recfound.config import BuildConfig, Config
from recfound.data.readers import RawSources, discover_sources, read_amazonqa
from recfound.data.schema import FEATURES, SPLITS
from recfound.data.tasks.catalog import load_catalog
from recfound.data.tasks.common import LETTERS, SplitSizes, progress
from recfound.data.tasks.interactions import load_interactions
from recfound.data.tasks.items import AttributeTask, ItemProfileTask, build_i2i, build_prp
from recfound.data.tasks.matching import build_pm
from recfound.data.tasks.qa import QATasks
from recfound.data.tasks.reviews import SentimentTask
from recfound.data.tasks.search import build_q2i, build_qr, load_esci
from recfound.data.tasks.sequences import SequenceTasks
from recfound.errors import RecFoundError
from recfound.tasks import TASKS

# The raw sources each task is built from (named in the error when a task ends up empty).
TASK_SOURCES: dict[str, tuple[str, ...]] = {
    "U2I": ("amazon_reviews", "movielens"),
    "Q2I": ("esci",),
    "I2I": ("amazon_reviews",),
    "QR": ("esci",),
    "SR": ("amazon_reviews", "movielens"),
    "PRP": ("esci",),
    "SA": ("amazon_reviews",),
    "AVE": ("amazon_reviews",),
    "PM": ("amazon_google",),
    "UP": ("amazon_reviews", "movielens"),
    "IP": ("amazon_reviews",),
    "AP": ("amazonqa",),
    "AG": ("amazonqa",),
}

Rows = dict[str, dict[str, list[dict]]]  # task code -> split -> rows


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


def build_rows(sources: RawSources, cfg: BuildConfig) -> Rows:
    """Every task's rows per split, from the raw files `sources` lists."""
    _check_config(cfg)
    sizes = SplitSizes.of(cfg)
    attributes, profiles = AttributeTask(cfg, sizes), ItemProfileTask(cfg, sizes)
    catalog = load_catalog(sources, cfg, observers=(attributes.observe, profiles.observe))
    queries = load_esci(sources, catalog, cfg)
    sentiment = SentimentTask(cfg, sizes)
    log = load_interactions(sources, catalog, observers=(sentiment.observe,))
    seqs = log.sequences()
    del log  # the sorted copy is all that is needed from here on
    qa = QATasks(cfg, sizes)
    for path in sources.amazonqa:
        for record in progress(read_amazonqa(path), f"amazonqa {path.name}"):
            qa.observe(record)
    rows = {
        **SequenceTasks(seqs, catalog, cfg).build(sizes),
        "Q2I": build_q2i(queries, catalog, cfg, sizes),
        "I2I": build_i2i(catalog, seqs, cfg, sizes),
        "QR": build_qr(queries, catalog, cfg, sizes),
        "PRP": build_prp(queries, catalog, cfg, sizes),
        "SA": sentiment.build(),
        "AVE": attributes.build(),
        "PM": build_pm(sources, cfg, sizes),
        "IP": profiles.build(catalog),
        "AP": qa.build_ap(),
        "AG": qa.build_ag(),
    }
    return {task.code: rows[task.code] for task in TASKS}


def check_rows(rows: Rows, present: Iterable[str]) -> None:
    """Raise BuildError for an empty task/split, train/test target overlap, or a duplicate id.

    Overlap is checked before duplicates: a record listed in both a train and a test file
    gives the same id twice, and "leaks into test" is the more useful name for that.
    """
    present = tuple(present)
    for code, by_split in rows.items():
        for split in SPLITS:
            if not by_split.get(split):
                needs = " or ".join(TASK_SOURCES[code])
                raise BuildError(
                    code,
                    split,
                    f"no samples: the task is built from {needs}; sources present: "
                    f"{', '.join(present) or 'none'}",
                )
    for code, by_split in rows.items():
        test_keys = {row["target_key"]: i for i, row in enumerate(by_split["test"])}
        for index, row in enumerate(by_split["train"]):
            if row["target_key"] in test_keys:
                raise BuildError(
                    code,
                    "train",
                    f"target {row['target_key']!r} is also the target of test row "
                    f"{test_keys[row['target_key']]}",
                    row=index,
                )
    first_seen: dict[str, tuple[str, str, int]] = {}
    for split in SPLITS:
        for code, by_split in rows.items():
            for index, row in enumerate(by_split[split]):
                where = first_seen.setdefault(row["id"], (code, split, index))
                if where != (code, split, index):
                    raise BuildError(
                        code,
                        split,
                        f"duplicate id {row['id']} (also {where[0]}/{where[1]} row {where[2]}); "
                        "the raw data lists the same record twice",
                        row=index,
                    )


def to_dataset(rows: Rows) -> datasets.DatasetDict:
    """The rows as a DatasetDict with the unified FEATURES, tasks in id order per split."""
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_list(
                [row for by_split in rows.values() for row in by_split[split]], features=FEATURES
            )
            for split in SPLITS
        }
    )


def build_unified(data_dir: str | Path, cfg: BuildConfig) -> datasets.DatasetDict:
    """Read the raw sources under `data_dir`, build and check every task, return the dataset."""
    sources = discover_sources(data_dir)
    rows = build_rows(sources, cfg)
    check_rows(rows, sources.present)
    return to_dataset(rows)


def _summary(dataset: datasets.DatasetDict) -> Table:
    counts = {split: dataset[split].to_pandas()["task"].value_counts() for split in SPLITS}
    table = Table(title="unified dataset: samples per task and split")
    for column in ("id", "task", "kind", *SPLITS):
        table.add_column(column, justify="right" if column in SPLITS or column == "id" else "left")
    for task in TASKS:
        table.add_row(
            str(task.id),
            task.code,
            task.kind.value,
            *(str(int(counts[s].get(task.code, 0))) for s in SPLITS),
        )
    table.add_row("", "all", "", *(str(dataset[s].num_rows) for s in SPLITS))
    return table


def run(cfg: Config) -> None:
    """Stage entry: build the unified dataset into `paths.unified` (replaced atomically)."""
    console = Console()
    started = time.perf_counter()
    dataset = build_unified(cfg.paths.data, cfg.build)
    with atomic_dir(cfg.paths.unified) as tmp:
        dataset.save_to_disk(str(tmp))
    console.print(_summary(dataset))
    console.print(
        f"unified dataset written to {cfg.paths.unified} ({time.perf_counter() - started:.1f} s)"
    )
