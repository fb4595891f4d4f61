"""Amazon Reviews 2014 and 2018 (McAuley lab, UCSD), the release P5 and S3-Rec use.

Reviews: `<Category>[_5].json[.gz]` (2018) or `reviews_<Category>[_5].json[.gz]` (2014), one
JSON object per line; `unixReviewTime` is in SECONDS (converted to the milliseconds `Review`
holds). Metadata: `meta_<Category>.json[.gz]`, strict JSON in 2018 but Python dict literals
(single quotes) in 2014, read with ast.literal_eval when a line is not JSON (never eval).
The two releases name some metadata fields differently (2018 `also_buy`, `category`;
2014 `related`, `categories`); one reader takes either. Mapping: docs/data-formats.md.
amazon_reviews.read_reviews / read_item_meta hand `.json[.gz]` files to the readers here.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from recfound.data.readers.common import (
    AMAZON_STARS,
    SECONDS,
    BadLines,
    Clock,
    Fields,
    is_price_text,
    iter_json_objects,
    parse_rows,
)
from recfound.data.records import ItemMeta, Review

CLOCK = Clock("Amazon Reviews 2014/2018", SECONDS)
MS_PER_SECOND = 1000
# 2018 writes a review's helpful votes as text with thousands commas ("1,234").
VOTE_TEXT = re.compile(r"^\d[\d,]*$")
# Objects of 2018 metadata merged into ItemMeta.details, in this order (first key wins).
DETAIL_FIELDS = ("details", "tech1", "tech2")
# Notes read_item_meta_2018 adds to its `notes` Counter, one per item.
NOTE_UNTITLED = "items without a title (title left empty)"
NOTE_NOT_A_PRICE = "prices that are not a price, e.g. page scraps or ranges (no price)"


def _helpful_votes(fields: Fields) -> int:
    """2018 `vote` (an integer or text such as "1,234"), else 2014 `helpful`[0]; absent: 0."""
    vote = fields.raw("vote", required=False)
    if vote is None:
        pair = fields.integer_pair("helpful")  # 2014: [helpful votes, total votes]
        return pair[0] if pair else 0
    if isinstance(vote, str) and VOTE_TEXT.match(vote.strip()):
        return int(vote.strip().replace(",", ""))
    return fields.integer("vote")


def _review(fields: Fields) -> Review:
    asin = fields.ident("asin")
    return Review(
        rating=fields.within("overall", fields.number("overall"), *AMAZON_STARS),
        title=fields.optional_text("summary"),
        text=fields.optional_text("reviewText"),
        asin=asin,
        parent_asin=asin,  # these releases know no parent (variant-grouping) asin
        user_id=fields.ident("reviewerID"),
        timestamp=fields.timestamp("unixReviewTime", CLOCK) * MS_PER_SECOND,
        helpful_vote=_helpful_votes(fields),
        verified_purchase=fields.flag("verified"),
    )


def read_reviews_2018(path: str | Path) -> Iterator[Review]:
    """Stream one 2014 or 2018 review file, one Review per line."""
    path = Path(path)
    bad = BadLines(path)
    yield from parse_rows(iter_json_objects(path, bad), _review, bad)


def _title(fields: Fields, notes: Counter[str] | None) -> str:
    """`title`; the 2014 metadata often has none, which gives "" and a note."""
    title = fields.optional_text("title")
    if not title.strip() and notes is not None:
        notes[NOTE_UNTITLED] += 1
    return title


def _description(fields: Fields) -> tuple[str, ...]:
    """`description`: a list of strings (2018) or one string (2014)."""
    value = fields.raw("description", required=False)
    if isinstance(value, str):
        return (value,) if value.strip() else ()
    return fields.text_list("description")


def _categories(fields: Fields) -> tuple[str, ...]:
    """2018 `category` (one path), else the first of 2014 `categories` (a list of paths)."""
    if fields.raw("category", required=False) is not None:
        return fields.text_list("category")
    paths = fields.raw("categories", required=False)
    if not paths:
        return ()
    if not isinstance(paths, list):
        raise fields.wrong("categories", "a list of category lists", paths)
    first = Fields(fields.path, fields.line, {"[0]": paths[0]}, prefix="categories")
    return first.text_list("[0]")


def _details(fields: Fields) -> dict[str, str]:
    """`details`, `tech1` and `tech2` as one dict; keys lose 2018's padding and colons."""
    merged: dict[str, str] = {}
    for name in DETAIL_FIELDS:
        for key, text in fields.text_dict(name).items():
            clean = key.strip().rstrip(":").strip()  # "\n    ASIN: \n" -> "ASIN"
            if clean:
                merged.setdefault(clean, text)
    return merged


def _price(fields: Fields, notes: Counter[str] | None) -> float | None:
    """`price`; 2018 text that is no price (page scraps, "$1 - $5" ranges) gives None, noted."""
    value = fields.raw("price", required=False)
    if isinstance(value, str) and not is_price_text(value):
        if notes is not None:
            notes[NOTE_NOT_A_PRICE] += 1
        return None
    return fields.price("price")


def _bought_together(fields: Fields) -> tuple[str, ...]:
    """2018 `also_buy`, 2014 `related.bought_together` then `related.also_bought`; no repeats."""
    groups = [fields.text_list("also_buy")]
    related = fields.raw("related", required=False)
    if related is not None:
        if not isinstance(related, dict):
            raise fields.wrong("related", "an object", related)
        nested = fields.nested("related", related)
        groups += [nested.text_list("bought_together"), nested.text_list("also_bought")]
    return tuple(dict.fromkeys(asin for group in groups for asin in group))


def _item(notes: Counter[str] | None, fields: Fields) -> ItemMeta:
    return ItemMeta(
        parent_asin=fields.ident("asin"),
        title=_title(fields, notes),
        main_category=fields.optional_text("main_cat"),
        features=fields.text_list("feature"),
        description=_description(fields),
        categories=_categories(fields),
        details=_details(fields),
        store=fields.optional_text("brand"),
        price=_price(fields, notes),
        bought_together=_bought_together(fields),
    )


def read_item_meta_2018(path: str | Path, notes: Counter[str] | None = None) -> Iterator[ItemMeta]:
    """Stream one 2014 or 2018 `meta_<Category>` file, one ItemMeta per line.

    `notes`, when given, counts the items read with a gap the format allows (NOTE_UNTITLED,
    NOTE_NOT_A_PRICE), so the caller can report them.
    """
    path = Path(path)
    bad = BadLines(path)
    rows = iter_json_objects(path, bad, python_literals=True)
    yield from parse_rows(rows, partial(_item, notes), bad)
