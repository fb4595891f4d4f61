"""Amazon ESCI Shopping Queries: examples joined with their products, streamed from parquet.

`shopping_queries_dataset_examples.parquet` holds (query, product) judgements;
`shopping_queries_dataset_products.parquet` the product catalogue. The join key is
(product_id, product_locale). Only the product rows some example references are kept in
memory; both files are read batch by batch, the examples twice (keys first, then records).
Each pass reports every bad row of its file at once (common.parse_rows).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import NoReturn, TypeVar

from recfound.data.readers.common import BadLines, Fields, iter_parquet_rows, parse_rows, quoted
from recfound.data.records import EsciExample
from recfound.errors import DataError

EXAMPLE_COLUMNS = {
    "example_id": "int",
    "query": "str",
    "query_id": "int",
    "product_id": "str",
    "product_locale": "str",
    "esci_label": "str",
    "split": "str",
}
KEY_COLUMNS = {"product_id": "str", "product_locale": "str"}
PRODUCT_COLUMNS = {
    "product_id": "str",
    "product_locale": "str",
    "product_title": "str",
    "product_description": "str",
    "product_bullet_point": "str",
    "product_brand": "str",
    "product_color": "str",
}
ESCI_LABELS = frozenset({"E", "S", "C", "I"})
T = TypeVar("T")

ProductKey = tuple[str, str]
# Product fields carried into EsciExample: title, description, bullet points, brand, colour.
ProductText = tuple[str, str, str, str, str]


def _key(fields: Fields) -> ProductKey:
    return fields.ident("product_id"), fields.ident("product_locale")


def _read(path: Path, columns: dict[str, str], parse: Callable[[Fields], T]) -> Iterator[T]:
    """`parse` of every row; every bad row is collected and raised at the end of the file."""
    bad = BadLines(path)
    yield from parse_rows(iter_parquet_rows(path, columns), parse, bad)


def _referenced_keys(examples_path: Path) -> set[ProductKey]:
    """Pass 1: the (product_id, product_locale) keys the examples use."""
    return set(_read(examples_path, KEY_COLUMNS, _key))


def _referenced_products(
    products_path: Path, wanted: set[ProductKey]
) -> dict[ProductKey, ProductText]:
    """Pass 2: the text of every wanted product; a wanted key listed twice is an error."""
    products: dict[ProductKey, ProductText] = {}

    def keep(fields: Fields) -> None:
        key = _key(fields)
        if key not in wanted:
            return  # unreferenced rows are neither kept nor checked
        if key in products:
            raise fields.error(f"product {key[0]} ({key[1]}) is listed more than once")
        products[key] = (
            fields.text("product_title"),
            fields.optional_text("product_description"),
            fields.optional_text("product_bullet_point"),
            fields.optional_text("product_brand"),
            fields.optional_text("product_color"),
        )

    deque(_read(products_path, PRODUCT_COLUMNS, keep), maxlen=0)  # run `keep` on every row
    return products


def _raise_first_missing(
    examples_path: Path, products_path: Path, missing: set[ProductKey]
) -> NoReturn:
    """Name the first example row whose product the catalogue lacks, and how many there are."""
    first_row, first_key, count = 0, ("", ""), 0
    for row_no, row in iter_parquet_rows(examples_path, KEY_COLUMNS):
        key = _key(Fields(examples_path, row_no, row))
        if key in missing:
            count += 1
            if not first_row:
                first_row, first_key = row_no, key
    raise DataError(
        examples_path,
        f"product {first_key[0]} ({first_key[1]}) is not in {products_path.name} "
        f"({count} example row(s) reference missing products)",
        line=first_row,
    )


def _example(products: dict[ProductKey, ProductText], fields: Fields) -> EsciExample:
    label = fields.text("esci_label")
    if label not in ESCI_LABELS:
        raise fields.error(f"esci_label must be one of E, S, C, I, got {quoted(label)}")
    product_id, locale = _key(fields)
    title, description, bullets, brand, color = products[(product_id, locale)]
    return EsciExample(
        example_id=fields.integer("example_id"),
        query=fields.text("query"),
        query_id=fields.integer("query_id"),
        product_id=product_id,
        product_locale=locale,
        esci_label=label,
        split=fields.ident("split"),
        product_title=title,
        product_description=description,
        product_bullet_point=bullets,
        product_brand=brand,
        product_color=color,
    )


def read_esci(examples_path: str | Path, products_path: str | Path) -> Iterator[EsciExample]:
    """Stream every example joined with its product row, in the examples file's order.

    Every referenced product is checked before the first record is yielded, so a missing
    product fails the read up front, naming the first example row that references it.
    """
    examples_path, products_path = Path(examples_path), Path(products_path)
    wanted = _referenced_keys(examples_path)
    products = _referenced_products(products_path, wanted)
    missing = wanted - products.keys()
    if missing:
        _raise_first_missing(examples_path, products_path, missing)
    yield from _read(examples_path, EXAMPLE_COLUMNS, partial(_example, products))
