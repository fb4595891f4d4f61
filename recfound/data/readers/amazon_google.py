"""Amazon-Google products, entity-matching benchmark layout (DeepMatcher "Structured").

`tableA.csv` (Amazon) and `tableB.csv` (Google): id,title,manufacturer,price.
`train.csv`, `valid.csv`, `test.csv`: ltable_id (a tableA id), rtable_id (a tableB id),
label (1 = same product, 0 = not). UTF-8 CSV with a header line, quoted where needed.
Prices are empty for unknown in the public files; empty gives None.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from recfound.data.readers.common import BadLines, Fields, iter_csv_rows, parse_rows, quoted
from recfound.data.records import MatchPair, MatchProduct

PRODUCT_COLUMNS = ("id", "title", "manufacturer", "price")
PAIR_COLUMNS = ("ltable_id", "rtable_id", "label")


def _product(fields: Fields) -> MatchProduct:
    return MatchProduct(
        id=fields.ident("id"),
        title=fields.text("title"),
        manufacturer=fields.text("manufacturer"),
        price=fields.price("price"),
    )


def read_match_products(
    path: str | Path, notes: Counter[str] | None = None
) -> Iterator[MatchProduct]:
    """Stream one product table (`tableA.csv` or `tableB.csv`).

    `notes`, when given, counts rows with values in unnamed columns (common.iter_csv_rows).
    """
    path = Path(path)
    bad = BadLines(path)
    yield from parse_rows(iter_csv_rows(path, PRODUCT_COLUMNS, bad, notes), _product, bad)


def _pair(fields: Fields) -> MatchPair:
    label = fields.parsed_int("label")
    if label not in (0, 1):
        raise fields.error(f"label must be 0 or 1, got {quoted(label)}")
    return MatchPair(
        ltable_id=fields.ident("ltable_id"),
        rtable_id=fields.ident("rtable_id"),
        label=label,
    )


def read_match_pairs(path: str | Path, notes: Counter[str] | None = None) -> Iterator[MatchPair]:
    """Stream one labelled pair file (`train.csv`, `valid.csv` or `test.csv`).

    `notes`, when given, counts rows with values in unnamed columns (common.iter_csv_rows).
    """
    path = Path(path)
    bad = BadLines(path)
    yield from parse_rows(iter_csv_rows(path, PAIR_COLUMNS, bad, notes), _pair, bad)
