"""Typed records the raw readers yield, one class per kind of public source record.

Field names follow the public datasets (see docs/data-formats.md), so a reader is a thin,
streaming parse-and-check of one file, and the builder never touches raw JSON/CSV/parquet.
Releases of one dataset that differ only in layout (Amazon Reviews 2014/2018/2023; MovieLens
ml-100k, ml-1m and the CSV sets) map onto the same record, so the builder needs no variants.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Review:
    """One user's review of one item: Amazon Reviews 2023 `<Category>.jsonl[.gz]`, or 2014/2018
    `<Category>[_5].json[.gz]` / `reviews_<Category>[_5].json[.gz]` (mapped as documented)."""

    rating: float
    title: str
    text: str
    asin: str
    parent_asin: str
    user_id: str
    timestamp: int  # milliseconds since the epoch (2014/2018 seconds are converted)
    helpful_vote: int = 0
    verified_purchase: bool = False


@dataclass(frozen=True)
class ItemMeta:
    """One product's catalogue entry: Amazon Reviews 2023 `meta_<Category>.jsonl[.gz]`, or
    2014/2018 `meta_<Category>.json[.gz]` (mapped as documented)."""

    parent_asin: str
    title: str
    main_category: str = ""
    features: tuple[str, ...] = ()
    description: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    details: dict[str, str] = field(default_factory=dict)
    store: str = ""
    price: float | None = None
    average_rating: float | None = None
    rating_number: int | None = None
    bought_together: tuple[str, ...] = ()


@dataclass(frozen=True)
class EsciExample:
    """Amazon ESCI Shopping Queries: a (query, product) judgement joined with its product row."""

    example_id: int
    query: str
    query_id: int
    product_id: str
    product_locale: str
    esci_label: str  # E (exact), S (substitute), C (complement), I (irrelevant)
    split: str
    product_title: str
    product_description: str = ""
    product_bullet_point: str = ""
    product_brand: str = ""
    product_color: str = ""


@dataclass(frozen=True)
class QAAnswer:
    answer_text: str
    answer_type: str = ""
    helpful: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class QARecord:
    """AmazonQA (`train-qar.jsonl` etc.): a question about a product with review snippets."""

    qid: str
    question_text: str
    question_type: str
    asin: str
    category: str
    review_snippets: tuple[str, ...]
    answers: tuple[QAAnswer, ...]
    is_answerable: bool


@dataclass(frozen=True)
class Rating:
    """MovieLens rating (ml-100k `u.data` / ml-1m `ratings.dat` / CSV sets `ratings.csv`)."""

    user_id: str
    item_id: str
    rating: float
    timestamp: int  # seconds since the epoch


@dataclass(frozen=True)
class Movie:
    """MovieLens movie (ml-100k `u.item` / ml-1m `movies.dat` / CSV sets `movies.csv`)."""

    item_id: str
    title: str
    genres: tuple[str, ...]


@dataclass(frozen=True)
class MovieTag:
    """MovieLens tag (CSV sets `tags.csv`): a free-text tag one user applied to one movie."""

    user_id: str
    item_id: str
    tag: str
    timestamp: int  # seconds since the epoch


@dataclass(frozen=True)
class MovieUser:
    """MovieLens user (ml-100k `u.user` / ml-1m `users.dat`)."""

    user_id: str
    gender: str
    age: int
    occupation: str
    zip_code: str


@dataclass(frozen=True)
class MatchProduct:
    """Amazon-Google products (entity-matching benchmark `tableA.csv` / `tableB.csv`)."""

    id: str
    title: str
    manufacturer: str
    price: float | None


@dataclass(frozen=True)
class MatchPair:
    """Labelled pair (`train.csv`, `valid.csv`, `test.csv`): ltable_id, rtable_id, label."""

    ltable_id: str
    rtable_id: str
    label: int
