"""PM: two listings of two platforms (Amazon, Google) -> the same product? yes / no.

The benchmark's own files give the splits (train.csv -> train, valid.csv -> validation,
test.csv -> test); within a split the lowest-ranked pairs are kept per label and the labels
interleaved, so matches are not drowned by the (far more common) non-matches.
"""

from __future__ import annotations

from pathlib import Path

from recfound.config import BuildConfig
from recfound.data.ingest import IngestReport
from recfound.data.readers import RawSources, read_match_pairs, read_match_products
from recfound.data.records import MatchPair, MatchProduct
from recfound.data.tasks.common import (
    NO,
    YES,
    BottomK,
    RowStream,
    SplitSizes,
    interleave,
    make_row,
    rank,
)
from recfound.errors import DataError

SOURCE = "amazon_google"
PM_OPTIONS = (YES, NO)
# Data rows of a pair file start on line 2 (line 1 is the header); pair rows never wrap.
FIRST_DATA_LINE = 2
# Unified split -> the AmazonGoogleFiles field of its pair file; test first (see fill_splits).
SPLIT_FILES = {"test": "test", "validation": "valid", "train": "train"}


def _listing(product: MatchProduct) -> str:
    parts = [product.title]
    if product.manufacturer:
        parts.append(f"manufacturer: {product.manufacturer}")
    if product.price is not None:
        parts.append(f"price: ${product.price:.2f}")
    return "; ".join(parts)


def _check_ids(path: Path, row: int, pair: MatchPair, left: dict, right: dict) -> None:
    for column, value, table, name in (
        ("ltable_id", pair.ltable_id, left, "tableA.csv"),
        ("rtable_id", pair.rtable_id, right, "tableB.csv"),
    ):
        if value not in table:
            raise DataError(path, f"{column} {value!r} is not an id of {name}", line=row)


def _products(path: Path, report: IngestReport) -> dict[str, MatchProduct]:
    counts = report.file(SOURCE, path)
    products = {}
    for product in read_match_products(path, notes=counts.notes):
        counts.read += 1
        products[product.id] = product
    return products


def build_pm(
    sources: RawSources, cfg: BuildConfig, sizes: SplitSizes, report: IngestReport | None = None
) -> RowStream:
    """PM rows from each Amazon-Google pair file, in the file's own split (test first);
    per split the lowest-ranked pairs, labels interleaved, up to the split's cap. The
    files read are counted in `report`."""
    report = report or IngestReport()
    filled = dict.fromkeys(SPLIT_FILES, 0)
    for files in sources.amazon_google:
        left, right = _products(files.table_a, report), _products(files.table_b, report)
        for split, name in SPLIT_FILES.items():
            path = getattr(files, name)
            counts = report.file(SOURCE, path)
            kept = {label: BottomK[MatchPair](sizes.get(split)) for label in (1, 0)}
            for row, pair in enumerate(
                read_match_pairs(path, notes=counts.notes), start=FIRST_DATA_LINE
            ):
                counts.read += 1
                _check_ids(path, row, pair, left, right)
                kept[pair.label].offer(rank(cfg.seed, "PM", pair.ltable_id, pair.rtable_id), pair)
            for pair in interleave({YES: kept[1].ranked(), NO: kept[0].ranked()}):
                if sizes.full(split, filled[split]):
                    break
                filled[split] += 1
                yield (
                    split,
                    make_row(
                        "PM",
                        (pair.ltable_id, pair.rtable_id),
                        input=f"Listing 1 (Amazon): {_listing(left[pair.ltable_id])}\n"
                        f"Listing 2 (Google): {_listing(right[pair.rtable_id])}",
                        output=YES if pair.label else NO,
                        options=PM_OPTIONS,
                        target_key=f"{pair.ltable_id}|{pair.rtable_id}",
                        source=SOURCE,
                    ),
                )
