"""`recfound data sample`: a small raw dataset in five of the six public formats, from the
latent world.

Five: every source the readers take (docs/data-formats.md) but Amazon Reviews 2014/2018
(`amazon_reviews_2018/`), whose records are those of Amazon Reviews 2023 in an older layout.

The records are the typed ones of recfound/data/records.py, drawn from recfound/data/latent.py,
then written exactly as the public releases lay them out (docs/data-formats.md), so the
readers, the builder and the validation stage see the same shapes as real data.

Determinism (same config -> byte-identical files on any machine with the pinned pyarrow):
seeded `random.Random` only; JSON with a fixed key order and the default separators; gzip
with mtime 0 and the file's name (as gzip stores it, without .gz) in the header; parquet
from an explicit arrow schema with fixed writer options; CSV with "\\n" line endings.
Reviews are generated and written one at a time (`write_reviews`), so millions of them need
no more memory than the world.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
import pyarrow.parquet as pq

from recfound.atomic import atomic_dir
from recfound.config import SampleConfig
from recfound.data.bundled import write_manifest
from recfound.data.latent import (
    CATEGORY_SPECS,
    MOVIE_GENRES,
    PICK_TRIES,
    Item,
    Purchase,
    User,
    World,
    fan_ratings,
    make_world,
    rng_for,
    user_purchases,
)
from recfound.data.records import (
    EsciExample,
    ItemMeta,
    MatchPair,
    MatchProduct,
    QAAnswer,
    QARecord,
)

GZIP_LEVEL = 6
PARQUET_OPTIONS = {"compression": "snappy", "use_dictionary": False, "write_statistics": False}
ESCI_LOCALE = "us"
# Judged products per ESCI query, by label (E includes the query's target item).
ESCI_PER_LABEL = {"E": 2, "S": 3, "C": 2, "I": 2}
ML100K_GENRE_FLAGS = ("unknown", *MOVIE_GENRES)
MATCH_SPLIT_FILES = ("train.csv", "valid.csv", "test.csv")
# AmazonQA: share of yes/no questions, and of those, share asking about the true value.
YESNO_SHARE = 0.5
# Google listings: how often the reworded title keeps colour and size, names the
# manufacturer (often empty in the public tableB), and how far the price moves.
GOOGLE_KEEPS_COLOUR = 0.7
GOOGLE_KEEPS_SIZE = 0.5
GOOGLE_HAS_MANUFACTURER = 0.5
GOOGLE_PRICE_JITTER = 0.1
MISSING_PRICE_SHARE = 0.1
# Draws allowed per wanted pair before giving up on finding new distinct pairs.
MATCH_DRAWS_PER_PAIR = 20


# --- Amazon Reviews 2023 ---------------------------------------------------------------------


def item_meta(item: Item) -> ItemMeta:
    """The catalogue entry of an item: brand and colour in the title; material in the title
    or the features; size in the title or the description (see latent.Item)."""
    spec = CATEGORY_SPECS[item.category]
    (colour_name, colour), (material_name, material), (size_name, size) = item.attributes
    features = (
        f"{material_name}: {material}",
        f"{item.product_type} for everyday use",
        f"From the {item.brand} {('budget', 'classic', 'premium')[item.tier]} range",
    )
    description = (
        f"Comes in size {size}.",
        f"Designed by {item.brand} to last.",
    )
    return ItemMeta(
        parent_asin=item.asin,
        title=item.title,
        main_category=spec.main_category,
        features=features,
        description=description,
        categories=(spec.main_category, item.product_type),
        details={
            "Brand": item.brand,
            colour_name: colour,
            material_name: material,
            size_name: size,
        },
        store=item.brand,
        price=item.price,
        average_rating=item.average_rating,
        rating_number=item.rating_number,
        bought_together=item.bought_together,
    )


def meta_json(meta: ItemMeta) -> dict:
    """An ItemMeta in the public file's key order (images and videos empty)."""
    return {
        "main_category": meta.main_category,
        "title": meta.title,
        "average_rating": meta.average_rating,
        "rating_number": meta.rating_number,
        "features": list(meta.features),
        "description": list(meta.description),
        "price": meta.price,
        "images": [],
        "videos": [],
        "store": meta.store,
        "categories": list(meta.categories),
        "details": dict(meta.details),
        "parent_asin": meta.parent_asin,
        "bought_together": list(meta.bought_together) or None,
    }


def review_json(user: User, purchase: Purchase) -> dict:
    """One review in the public file's key order."""
    return {
        "rating": float(purchase.rating),
        "title": purchase.title,
        "text": purchase.text,
        "images": [],
        "asin": purchase.item.asin,
        "parent_asin": purchase.item.asin,
        "user_id": user.user_id,
        "timestamp": purchase.timestamp_ms,
        "helpful_vote": purchase.helpful_vote,
        "verified_purchase": purchase.verified,
    }


class _GzipJsonLines:
    """A gzip JSON Lines writer with a reproducible header (mtime 0, the target's name; never
    the temporary directory it is written in)."""

    def __init__(self, path: Path) -> None:
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._gz = gzip.GzipFile(
            filename=path.name, mode="wb", fileobj=self._raw, mtime=0, compresslevel=GZIP_LEVEL
        )

    def write(self, obj: dict) -> None:
        self._gz.write((json.dumps(obj, ensure_ascii=False) + "\n").encode("utf-8"))

    def close(self) -> None:
        self._gz.close()
        self._raw.close()


def write_item_meta(directory: Path, world: World) -> dict[str, int]:
    """Write `meta_<Category>.jsonl.gz` for every category of the world; items per category."""
    directory.mkdir(parents=True, exist_ok=True)
    counts = {}
    for category in world.categories:
        writer = _GzipJsonLines(directory / f"meta_{category}.jsonl.gz")
        try:
            items = [item for item in world.items if item.category == category]
            for item in items:
                writer.write(meta_json(item_meta(item)))
        finally:
            writer.close()
        counts[category] = len(items)
    return counts


def iter_reviews(world: World) -> Iterator[tuple[str, dict]]:
    """(category, review JSON) for every purchase of every user, user by user, lazily."""
    for user in world.users:
        for purchase in user_purchases(world, user):
            yield purchase.item.category, review_json(user, purchase)


def write_reviews(directory: Path, world: World, n_reviews: int | None = None) -> dict[str, int]:
    """Stream the world's reviews into `<Category>.jsonl.gz` files under `directory`.

    Users are generated and written one at a time (memory: the world, not the reviews);
    writing stops after `n_reviews` reviews when given (else every user's purchases).
    Returns the number of reviews written per category. To write ~1M reviews, make a world
    with about 1M / mean(min_sequence, max_sequence) users.
    """
    directory.mkdir(parents=True, exist_ok=True)
    writers = {c: _GzipJsonLines(directory / f"{c}.jsonl.gz") for c in world.categories}
    counts = dict.fromkeys(world.categories, 0)
    try:
        for written, (category, review) in enumerate(iter_reviews(world)):
            if n_reviews is not None and written >= n_reviews:
                break
            writers[category].write(review)
            counts[category] += 1
    finally:
        for writer in writers.values():
            writer.close()
    return counts


# --- ESCI ------------------------------------------------------------------------------------


def _typo(rng: random.Random, word: str) -> str:
    """Drop or swap one inner letter (what a hurried shopper types), with equal chance."""
    at = rng.randrange(1, len(word) - 2)
    if rng.random() < 0.5:
        return word[:at] + word[at + 1 :]
    return word[:at] + word[at + 1] + word[at] + word[at + 2 :]


QUERY_PATTERNS = (
    ("type",),
    ("brand", "type"),
    ("colour", "type"),
    ("material", "type"),
    ("brand", "colour", "type"),
    ("colour", "material", "type"),
)


def _query(rng: random.Random, cfg: SampleConfig, item: Item) -> tuple[str, dict[str, str]]:
    """A lower-case query naming some of the item's attributes, sometimes with a typo."""
    pattern = rng.choice(QUERY_PATTERNS)
    values = {"brand": item.brand, "colour": item.colour, "material": item.material}
    wanted = {name: values[name] for name in pattern if name != "type"}
    words = " ".join([*wanted.values(), item.product_type]).lower().split()
    if rng.random() < cfg.query_typo_share:
        long_words = [i for i, w in enumerate(words) if len(w) >= 5]
        if long_words:
            at = rng.choice(long_words)
            words[at] = _typo(rng, words[at])
    return " ".join(words), wanted


def _matches(item: Item, target: Item, wanted: dict[str, str]) -> bool:
    values = {"brand": item.brand, "colour": item.colour, "material": item.material}
    same_kind = (item.category, item.type_index) == (target.category, target.type_index)
    return same_kind and all(values[k] == v for k, v in wanted.items())


def esci_examples(world: World) -> list[EsciExample]:
    """Queries drawn from items; judged products: E (has every queried attribute), S (same
    type, not all attributes), C (the complementary type), I (another type)."""
    cfg = world.cfg
    rng = rng_for(cfg, "esci")
    examples = []
    for query_id in range(1, cfg.n_queries + 1):
        target = rng.choice(world.items)
        query, wanted = _query(rng, cfg, target)
        n_types = len(CATEGORY_SPECS[target.category].types)
        same_type = world.by_type[(target.category, target.type_index)]
        complements = world.by_type.get((target.category, (target.type_index + 1) % n_types), ())
        exact = [i for i in same_type if i is not target and _matches(i, target, wanted)]
        related = (target.type_index, (target.type_index + 1) % n_types)
        judged = {
            "E": [target, *rng.sample(exact, len(exact))],
            "S": [i for i in same_type if not _matches(i, target, wanted)],
            "C": list(complements),
            "I": [
                i
                for i in world.items
                if i.category != target.category or i.type_index not in related
            ],
        }
        split = "test" if rng.random() < cfg.esci_test_share else "train"
        chosen: list[tuple[str, Item]] = []
        used: set[str] = set()
        for label, pool in judged.items():
            draws = min(len(pool), PICK_TRIES * ESCI_PER_LABEL[label])
            order = pool if label == "E" else rng.sample(pool, draws)
            picked = [i for i in order if i.asin not in used][: ESCI_PER_LABEL[label]]
            used.update(i.asin for i in picked)
            chosen += [(label, i) for i in picked]
        rng.shuffle(chosen)
        for label, item in chosen:
            meta = item_meta(item)
            examples.append(
                EsciExample(
                    example_id=len(examples),
                    query=query,
                    query_id=query_id,
                    product_id=item.asin,
                    product_locale=ESCI_LOCALE,
                    esci_label=label,
                    split=split,
                    product_title=meta.title,
                    product_description=" ".join(meta.description),
                    product_bullet_point="\n".join(meta.features),
                    product_brand=item.brand,
                    product_color=item.colour if item.attributes[0][0] == "Color" else "",
                )
            )
    return examples


def write_esci(directory: Path, examples: list[EsciExample]) -> None:
    """The examples and products parquet files (products: one row per referenced product)."""
    directory.mkdir(parents=True, exist_ok=True)
    examples_table = pa.table(
        {
            "example_id": pa.array([e.example_id for e in examples], pa.int64()),
            "query": pa.array([e.query for e in examples], pa.string()),
            "query_id": pa.array([e.query_id for e in examples], pa.int64()),
            "product_id": pa.array([e.product_id for e in examples], pa.string()),
            "product_locale": pa.array([e.product_locale for e in examples], pa.string()),
            "esci_label": pa.array([e.esci_label for e in examples], pa.string()),
            "small_version": pa.array([1] * len(examples), pa.int64()),
            "large_version": pa.array([1] * len(examples), pa.int64()),
            "split": pa.array([e.split for e in examples], pa.string()),
        }
    )
    products = {}
    for e in examples:
        products.setdefault((e.product_id, e.product_locale), e)
    rows = [products[key] for key in sorted(products)]
    products_table = pa.table(
        {
            "product_id": pa.array([p.product_id for p in rows], pa.string()),
            "product_title": pa.array([p.product_title for p in rows], pa.string()),
            "product_description": pa.array([p.product_description for p in rows], pa.string()),
            "product_bullet_point": pa.array([p.product_bullet_point for p in rows], pa.string()),
            "product_brand": pa.array([p.product_brand for p in rows], pa.string()),
            "product_color": pa.array([p.product_color or None for p in rows], pa.string()),
            "product_locale": pa.array([p.product_locale for p in rows], pa.string()),
        }
    )
    pq.write_table(
        examples_table, directory / "shopping_queries_dataset_examples.parquet", **PARQUET_OPTIONS
    )
    pq.write_table(
        products_table, directory / "shopping_queries_dataset_products.parquet", **PARQUET_OPTIONS
    )


# --- AmazonQA --------------------------------------------------------------------------------

QUESTIONS = {  # detail name -> (descriptive question, yes/no question about value {v})
    "Brand": ("Who makes this {t}?", "Is this {t} made by {v}?"),
    "Color": ("What color is this {t}?", "Is this {t} {v}?"),
    "Scent": ("What does this {t} smell like?", "Does this {t} smell of {v}?"),
    "Material": ("What is this {t} made of?", "Is this {t} made of {v}?"),
    "Item Form": ("What form does this {t} come in?", "Is this {t} a {v}?"),
    "Size": ("What size is this {t}?", "Is this {t} {v}?"),
}
MENTIONS = {  # detail name -> a review sentence that states the value {v}
    "Brand": "You cannot go wrong with {v}.",
    "Color": "The {v} colour is lovely.",
    "Scent": "The {v} scent is subtle.",
    "Material": "The {v} feels solid.",
    "Item Form": "I like the {v} texture.",
    "Size": "The {v} size is just right.",
}
FILLERS = (
    "Arrived quickly and well packed.",
    "Good value for money.",
    "This is my second one.",
    "Customer service was helpful.",
    "Would buy again.",
    "Does exactly what it says.",
)


def amazonqa_records(world: World) -> list[QARecord]:
    """Questions about one attribute of an item; answerable ones have a snippet stating it,
    the others only snippets about other attributes and generic remarks."""
    cfg = world.cfg
    rng = rng_for(cfg, "amazonqa")
    records = []
    for qid in range(1, cfg.n_questions + 1):
        item = rng.choice(world.items)
        facts = [("Brand", item.brand), *item.attributes]
        asked, value = rng.choice(facts)
        kind = item.product_type.lower()
        descriptive, yesno = QUESTIONS[asked]
        if rng.random() < YESNO_SHARE:
            question_type = "yesno"
            values = dict(CATEGORY_SPECS[item.category].attributes).get(asked, (value,))
            asked_value = value if rng.random() < YESNO_SHARE else rng.choice(values)
            question = yesno.format(t=kind, v=asked_value)
            answer_type = "Y" if asked_value == value else "N"
            answer = f"Yes, it is {value}." if asked_value == value else f"No, it is {value}."
        else:
            question_type, answer_type = "descriptive", ""
            question = descriptive.format(t=kind)
            answer = f"It is {value}."
        answerable = rng.random() < cfg.answerable_share
        others = [MENTIONS[name].format(v=v) for name, v in facts if name != asked]
        snippets = [rng.choice(others), *rng.sample(FILLERS, rng.randint(1, 2))]
        if answerable:
            snippets.append(MENTIONS[asked].format(v=value))
        rng.shuffle(snippets)
        helpful = rng.randrange(6)
        records.append(
            QARecord(
                qid=str(qid),
                question_text=question,
                question_type=question_type,
                asin=item.asin,
                category=item.category,
                review_snippets=tuple(snippets),
                answers=(QAAnswer(answer, answer_type, (helpful, helpful + rng.randrange(3))),),
                is_answerable=answerable,
            )
        )
    return records


def amazonqa_json(record: QARecord) -> dict:
    return {
        "questionText": record.question_text,
        "questionType": record.question_type,
        "review_snippets": list(record.review_snippets),
        "answers": [
            {"answerText": a.answer_text, "answerType": a.answer_type, "helpful": list(a.helpful)}
            for a in record.answers
        ],
        "is_answerable": record.is_answerable,
        "asin": record.asin,
        "category": record.category,
        "qid": record.qid,
    }


def write_amazonqa(path: Path, world: World) -> int:
    """The world's questions as one AmazonQA JSON Lines file; returns the number written."""
    records = amazonqa_records(world)
    _write_text(path, (json.dumps(amazonqa_json(r), ensure_ascii=False) for r in records))
    return len(records)


def _write_text(path: Path, lines: Iterable[str], encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding=encoding, newline="\n") as handle:
        for line in lines:
            handle.write(line + "\n")


# --- MovieLens ml-100k ----------------------------------------------------------------------


def write_movielens(directory: Path, world: World) -> int:
    """`u.data`, `u.item` (ISO-8859-1), `u.user`, `u.genre` of ml-100k; returns #ratings."""
    ratings = [
        f"{fan.user_id}\t{movie.item_id}\t{stars}\t{timestamp}"
        for fan in world.movie_fans
        for movie, stars, timestamp in fan_ratings(world, fan)
    ]
    _write_text(directory / "u.data", ratings)
    items = []
    for movie in world.movies:
        flags = ["1" if g in movie.genres else "0" for g in ML100K_GENRE_FLAGS]
        url = "http://us.imdb.com/M/title-exact?" + quote(movie.title, safe="()")
        items.append(
            "|".join([movie.item_id, movie.title, f"01-Jan-{movie.year}", "", url, *flags])
        )
    _write_text(directory / "u.item", items, encoding="iso-8859-1")
    users = [
        f"{f.user_id}|{f.age}|{f.gender}|{f.occupation}|{f.zip_code}" for f in world.movie_fans
    ]
    _write_text(directory / "u.user", users)
    _write_text(directory / "u.genre", [f"{g}|{i}" for i, g in enumerate(ML100K_GENRE_FLAGS)])
    return len(ratings)


# --- Amazon-Google ---------------------------------------------------------------------------


def _google_listing(rng: random.Random, item: Item) -> tuple[str, str, float | None]:
    """The same product as another platform lists it: reworded title, sparse manufacturer,
    a slightly different price."""
    words = [item.product_type, item.brand]
    if rng.random() < GOOGLE_KEEPS_COLOUR:
        words.append(item.colour)
    words.append(item.material)
    if rng.random() < GOOGLE_KEEPS_SIZE:
        words.append(item.size)
    title = " ".join(words).lower()
    manufacturer = item.brand.lower() if rng.random() < GOOGLE_HAS_MANUFACTURER else ""
    jitter = rng.uniform(1 - GOOGLE_PRICE_JITTER, 1 + GOOGLE_PRICE_JITTER)
    price = None if rng.random() < MISSING_PRICE_SHARE else round(item.price * jitter, 2)
    return title, manufacturer, price


def match_records(
    world: World,
) -> tuple[list[MatchProduct], list[MatchProduct], dict[str, list[MatchPair]]]:
    """tableA (Amazon), tableB (Google) and labelled pairs per file (train/valid/test.csv).

    A positive pairs an item with its Google listing; a negative pairs it with the listing
    of a look-alike (same type, and same brand where one exists)."""
    cfg = world.cfg
    rng = rng_for(cfg, "amazon_google")
    n_left = max(1, cfg.n_match_pairs // 2)
    left_items = rng.sample(world.items, min(n_left, len(world.items)))
    table_a = [
        MatchProduct(
            str(i),
            item.title,
            item.brand,
            None if rng.random() < MISSING_PRICE_SHARE else item.price,
        )
        for i, item in enumerate(left_items)
    ]
    right_items = list(world.items)
    rng.shuffle(right_items)
    right_id = {item.asin: str(i) for i, item in enumerate(right_items)}
    table_b = [MatchProduct(str(i), *_google_listing(rng, it)) for i, it in enumerate(right_items)]
    pairs: dict[MatchPair, None] = {}  # insertion-ordered; a pair drawn twice is kept once
    for _ in range(cfg.n_match_pairs * MATCH_DRAWS_PER_PAIR):
        if len(pairs) >= cfg.n_match_pairs:
            break
        left = rng.randrange(len(left_items))
        item = left_items[left]
        if rng.random() < cfg.match_positive_share:
            pairs[MatchPair(str(left), right_id[item.asin], 1)] = None
            continue
        pool = [o for o in world.by_type[(item.category, item.type_index)] if o is not item]
        if pool:
            same_brand = [o for o in pool if o.brand == item.brand]
            pairs[MatchPair(str(left), right_id[rng.choice(same_brand or pool).asin], 0)] = None
    unique = list(pairs)
    cuts = [0]
    for share in cfg.match_split:
        cuts.append(cuts[-1] + round(share * len(unique)))
    cuts[-1] = len(unique)
    files = {name: unique[cuts[i] : cuts[i + 1]] for i, name in enumerate(MATCH_SPLIT_FILES)}
    return table_a, table_b, files


def _csv_lines(header: tuple[str, ...], rows: Iterable[tuple]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(row)
    yield from buffer.getvalue().splitlines()


def _price_text(price: float | None) -> str:
    return "" if price is None else f"{price:.2f}"


def write_amazon_google(directory: Path, world: World) -> int:
    """tableA.csv, tableB.csv, train.csv, valid.csv, test.csv; returns the number of pairs."""
    table_a, table_b, files = match_records(world)
    header = ("id", "title", "manufacturer", "price")
    for name, table in (("tableA.csv", table_a), ("tableB.csv", table_b)):
        rows = ((p.id, p.title, p.manufacturer, _price_text(p.price)) for p in table)
        _write_text(directory / name, _csv_lines(header, rows))
    for name, pairs in files.items():
        rows = ((p.ltable_id, p.rtable_id, p.label) for p in pairs)
        _write_text(directory / name, _csv_lines(("ltable_id", "rtable_id", "label"), rows))
    return sum(len(p) for p in files.values())


# --- all sources -----------------------------------------------------------------------------


def write_sample(out_dir: str | Path, cfg: SampleConfig) -> Path:
    """Write the whole raw sample under `out_dir` (replaced atomically); returns `out_dir`.

    Layout (docs/data-formats.md): amazon_reviews/<Category>.jsonl.gz + meta_<Category>.jsonl.gz,
    esci/*.parquet, amazonqa/train-qar.jsonl, movielens/ml-100k/u.*, amazon_google/*.csv, and
    the manifest that marks it as the bundled sample (recfound.data.bundled).
    """
    out_dir = Path(out_dir)
    world = make_world(cfg)
    with atomic_dir(out_dir) as tmp:
        write_item_meta(tmp / "amazon_reviews", world)
        write_reviews(tmp / "amazon_reviews", world)
        write_esci(tmp / "esci", esci_examples(world))
        write_amazonqa(tmp / "amazonqa" / "train-qar.jsonl", world)
        write_movielens(tmp / "movielens" / "ml-100k", world)
        write_amazon_google(tmp / "amazon_google", world)
        write_manifest(tmp, cfg.seed)  # tells the build this is the bundled sample
    return out_dir
