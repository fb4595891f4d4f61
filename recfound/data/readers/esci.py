"""Amazon ESCI Shopping Queries: examples joined with their products, streamed from parquet.

`shopping_queries_dataset_examples.parquet` holds (query, product) judgements;
`shopping_queries_dataset_products.parquet` the product catalogue. The join key is
(product_id, product_locale). Only the product rows some example references are kept in
memory; both files are read batch by batch, the examples twice (keys first, then records).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from recfound.data.readers.common import Fields, iter_parquet_rows
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

ProductKey = tuple[str, str]
# Product fields carried into EsciExample: title, description, bullet points, brand, colour.
ProductText = tuple[str, str, str, str, str]


def _key(fields: Fields) -> ProductKey:
    return fields.ident("product_id"), fields.ident("product_locale")


def _referenced_keys(examples_path: Path) -> set[ProductKey]:
    """Pass 1: the (product_id, product_locale) keys the examples use."""
    return {
        _key(Fields(examples_path, row_no, row))
        for row_no, row in iter_parquet_rows(examples_path, KEY_COLUMNS)
    }


def _referenced_products(
    products_path: Path, wanted: set[ProductKey]
) -> dict[ProductKey, ProductText]:
    """Pass 2: the text of every wanted product; a wanted key listed twice is an error."""
    products: dict[ProductKey, ProductText] = {}
    for row_no, row in iter_parquet_rows(products_path, PRODUCT_COLUMNS):
        fields = Fields(products_path, row_no, row)
        key = _key(fields)
        if key not in wanted:
            continue
        if key in products:
            raise fields.error(f"product {key[0]} ({key[1]}) is listed more than once")
        products[key] = (
            fields.text("product_title"),
            fields.optional_text("product_description"),
            fields.optional_text("product_bullet_point"),
            fields.optional_text("product_brand"),
            fields.optional_text("product_color"),
        )
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
    for row_no, row in iter_parquet_rows(examples_path, EXAMPLE_COLUMNS):
        fields = Fields(examples_path, row_no, row)
        label = fields.text("esci_label")
        if label not in ESCI_LABELS:
            raise fields.error(f"esci_label must be one of E, S, C, I, got {label!r}")
        product_id, locale = _key(fields)
        title, description, bullets, brand, color = products[(product_id, locale)]
        yield EsciExample(
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
