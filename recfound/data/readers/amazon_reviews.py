"""Amazon Reviews: `<Category>` review files and `meta_<Category>` item files, any release.

The release is told by the file name: Amazon Reviews 2023 writes `.jsonl[.gz]` (read here),
2014 and 2018 write `.json[.gz]` (read by amazon_reviews_2018; discovery keeps them in
amazon_reviews_2018/). Both map onto the same records, so callers need not care which.

2023: one JSON object per line, UTF-8, optionally gzip-compressed; read line by line.
Review `timestamp` is in milliseconds. Item `price` varies in the public files between a
number, null and text ("None", "$12.99"); `details` values that are not strings (nested
objects, numbers) are kept as compact JSON text.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from recfound.data.readers import amazon_reviews_2018
from recfound.data.readers.common import (
    AMAZON_STARS,
    MILLISECONDS,
    BadLines,
    Clock,
    Fields,
    iter_json_objects,
    parse_rows,
)
from recfound.data.records import ItemMeta, Review

CLOCK = Clock("Amazon Reviews 2023", MILLISECONDS)
JSON_2014_2018 = ".json"


def is_2014_2018(path: Path) -> bool:
    """The file is in the 2014/2018 format: its name ends in `.json` or `.json.gz`."""
    return path.name.removesuffix(".gz").endswith(JSON_2014_2018)


def _review(fields: Fields) -> Review:
    return Review(
        rating=fields.within("rating", fields.number("rating"), *AMAZON_STARS),
        title=fields.text("title"),
        text=fields.text("text"),
        asin=fields.ident("asin"),
        parent_asin=fields.ident("parent_asin"),
        user_id=fields.ident("user_id"),
        timestamp=fields.timestamp("timestamp", CLOCK),
        helpful_vote=fields.optional_integer("helpful_vote") or 0,
        verified_purchase=fields.flag("verified_purchase"),
    )


def read_reviews(path: str | Path) -> Iterator[Review]:
    """Stream the reviews of one category file, one Review per line (any release)."""
    path = Path(path)
    if is_2014_2018(path):
        yield from amazon_reviews_2018.read_reviews_2018(path)
        return
    bad = BadLines(path)
    yield from parse_rows(iter_json_objects(path, bad), _review, bad)


def _item(fields: Fields) -> ItemMeta:
    return ItemMeta(
        parent_asin=fields.ident("parent_asin"),
        title=fields.text("title"),
        main_category=fields.optional_text("main_category"),
        features=fields.text_list("features"),
        description=fields.text_list("description"),
        categories=fields.text_list("categories"),
        details=fields.text_dict("details"),
        store=fields.optional_text("store"),
        price=fields.price("price"),
        average_rating=fields.optional_number("average_rating"),
        rating_number=fields.optional_integer("rating_number"),
        bought_together=fields.text_list("bought_together"),
    )


def read_item_meta(path: str | Path, notes: Counter[str] | None = None) -> Iterator[ItemMeta]:
    """Stream the catalogue entries of one `meta_<Category>` file, one ItemMeta per line.

    `notes`, when given, counts the items of a 2014/2018 file read with a gap that format
    allows (see amazon_reviews_2018.read_item_meta_2018); 2023 files add none.
    """
    path = Path(path)
    if is_2014_2018(path):
        yield from amazon_reviews_2018.read_item_meta_2018(path, notes)
        return
    bad = BadLines(path)
    yield from parse_rows(iter_json_objects(path, bad), _item, bad)
