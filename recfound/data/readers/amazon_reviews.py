"""Amazon Reviews 2023: `<Category>.jsonl[.gz]` reviews and `meta_<Category>.jsonl[.gz]` items.

One JSON object per line, UTF-8, optionally gzip-compressed; read line by line.
Review `timestamp` is in milliseconds. Item `price` varies in the public files between a
number, null and text ("None", "$12.99"); `details` values that are not strings (nested
objects, numbers) are kept as compact JSON text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from recfound.data.readers.common import Fields, iter_json_objects
from recfound.data.records import ItemMeta, Review


def read_reviews(path: str | Path) -> Iterator[Review]:
    """Stream the reviews of one category file, one Review per line."""
    path = Path(path)
    for line_no, obj in iter_json_objects(path):
        fields = Fields(path, line_no, obj)
        yield Review(
            rating=fields.number("rating"),
            title=fields.text("title"),
            text=fields.text("text"),
            asin=fields.ident("asin"),
            parent_asin=fields.ident("parent_asin"),
            user_id=fields.ident("user_id"),
            timestamp=fields.integer("timestamp"),
            helpful_vote=fields.optional_integer("helpful_vote") or 0,
            verified_purchase=fields.flag("verified_purchase"),
        )


def _details(fields: Fields) -> dict[str, str]:
    """`details` as str -> str: string values as they are, any other JSON value as JSON text."""
    value = fields.raw("details", required=False)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fields.error(f"field 'details' must be an object, got {type(value).__name__}")
    return {
        key: item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
        for key, item in value.items()
    }


def read_item_meta(path: str | Path) -> Iterator[ItemMeta]:
    """Stream the catalogue entries of one `meta_<Category>` file, one ItemMeta per line."""
    path = Path(path)
    for line_no, obj in iter_json_objects(path):
        fields = Fields(path, line_no, obj)
        yield ItemMeta(
            parent_asin=fields.ident("parent_asin"),
            title=fields.text("title"),
            main_category=fields.optional_text("main_category"),
            features=fields.text_list("features"),
            description=fields.text_list("description"),
            categories=fields.text_list("categories"),
            details=_details(fields),
            store=fields.optional_text("store"),
            price=fields.price("price"),
            average_rating=fields.optional_number("average_rating"),
            rating_number=fields.optional_integer("rating_number"),
            bought_together=fields.text_list("bought_together"),
        )
