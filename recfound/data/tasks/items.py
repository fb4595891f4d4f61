"""Item tasks: I2I (related items), PRP (product relation), AVE (attributes), IP (item profile).

I2I: an item -> its related items: `bought_together` from the metadata first, then the items
users bought right after it (co-purchases), up to `i2i_positives`; negatives from the item's
category, never a related one. Anchors are split by seeded rank.
PRP: pairs (a query's exact product, another product judged for that query) from ESCI; the
judgement gives the relation: C -> complement, S -> substitute, I -> unrelated. Split by the
pair's rank (a pair never crosses splits), labels interleaved.
AVE: the metadata `details` whose value appears in the product text shown; the source is the
first field (title, features, description) that contains it.
IP: a profile sentence set derived from the metadata: topic, store, price (and its band among
the category's prices: lowest third budget, middle mid-range, top premium), rating summary.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right

from recfound.config import BuildConfig
from recfound.data.records import ItemMeta
from recfound.data.tasks.catalog import MOVIES_CATEGORY, Catalog, leaf_topic
from recfound.data.tasks.common import (
    BottomK,
    RowStream,
    SplitSizes,
    clip,
    fill_splits,
    interleave,
    make_row,
    rank,
    rng_for,
)
from recfound.data.tasks.interactions import AMAZON, Sequences
from recfound.data.tasks.search import SOURCE as ESCI_SOURCE
from recfound.data.tasks.search import EsciQuery, exact_product

# PRP: ESCI label of the second product -> (option letter, option text).
RELATIONS = {
    "C": ("A", "complements: bought together"),
    "S": ("B", "substitutes: one can replace the other"),
    "I": ("C", "unrelated"),
}
PRP_OPTIONS = tuple(letter for letter, _ in RELATIONS.values())
# IP: price bands by third of the category's price distribution, and rating verdicts.
PRICE_BANDS = ("budget", "mid-range", "premium")
VERDICTS = ((4.3, "a customer favourite"), (3.5, "mostly liked"), (0.0, "mixed reviews"))
# AVE: detail values that are JSON text (nested objects, lists) are not attribute values.
JSON_LIKE = re.compile(r"^\s*[\[{]")


def build_i2i(catalog: Catalog, seqs: Sequences, cfg: BuildConfig, sizes: SplitSizes) -> RowStream:
    anchors = sorted(
        {*catalog.bought_together, *seqs.items_with_followers()}
        & {i for i, info in catalog.items.items() if info.category != MOVIES_CATEGORY},
        key=lambda item: (rank(cfg.seed, "I2I", item), item),
    )

    def related(anchor: str) -> list[str]:
        together = [i for i in catalog.bought_together.get(anchor, ()) if i in catalog]
        bought_next = [i for i, _ in seqs.co_purchased(anchor) if i in catalog]
        return [i for i in dict.fromkeys(together + bought_next) if i != anchor]

    def make(split: str, anchor: str) -> dict | None:
        linked = related(anchor)
        if not linked:
            return None
        positives = linked[: cfg.i2i_positives]
        category = catalog[anchor].category
        negatives = catalog.pools.sample(
            category,
            cfg.hard_negatives if split == "train" else cfg.eval_negatives,
            exclude={anchor, *linked},
            rng=rng_for(cfg.seed, "I2I", "negatives", anchor),
        )
        if negatives is None:
            return None
        return make_row(
            "I2I",
            (anchor,),
            input=catalog.passage(anchor),
            positives=[catalog.passage(i) for i in positives],
            positive_ids=positives,
            negatives=[catalog.passage(i) for i in negatives],
            negative_ids=negatives,
            category=category,
            target_key=anchor,
            source=catalog[anchor].source,
        )

    return fill_splits(anchors, sizes, make)


def build_prp(
    queries: list[EsciQuery], catalog: Catalog, cfg: BuildConfig, sizes: SplitSizes
) -> RowStream:
    classes = {label: BottomK[tuple[str, str, str]](sizes.total) for label in RELATIONS}
    for query in queries:
        anchor = exact_product(query, cfg.seed)
        if anchor is None:
            continue
        for other, label in query.judged:
            if label in RELATIONS and other != anchor:
                classes[label].offer(rank(cfg.seed, "PRP", anchor, other), (anchor, other, label))
    seen: set[tuple[str, str]] = set()
    ranked = []
    for anchor, other, label in interleave({k: v.ranked() for k, v in classes.items()}):
        if (anchor, other) not in seen:  # the same pair judged under two queries: once
            seen.add((anchor, other))
            ranked.append((anchor, other, label))
    options = "\n".join(f"{letter}. {text}" for letter, text in RELATIONS.values())

    def make(split: str, pair: tuple[str, str, str]) -> dict:
        anchor, other, label = pair
        return make_row(
            "PRP",
            (anchor, other),
            input=f"Product 1: {catalog[anchor].title}\nProduct 2: {catalog[other].title}\n"
            f"Options:\n{options}",
            output=RELATIONS[label][0],
            options=PRP_OPTIONS,
            category=catalog[anchor].category,
            target_key=f"{anchor}|{other}",
            source=ESCI_SOURCE,
        )

    return fill_splits(ranked, sizes, make)


def _contains(text: str, value: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(value.lower())}(?!\w)", text.lower()) is not None


class ProductText:
    """The product text an AVE or IP prompt shows: title, features and description, cut so
    together they fit `text_chars` (half for the title, a quarter for each list)."""

    def __init__(self, meta: ItemMeta, cfg: BuildConfig) -> None:
        self.title = clip(meta.title, cfg.text_chars // 2)
        self.features = clip("; ".join(meta.features), cfg.text_chars // 4)
        self.description = clip(" ".join(meta.description), cfg.text_chars // 4)

    def fields(self) -> dict[str, str]:
        return {"title": self.title, "features": self.features, "description": self.description}


class AttributeTask:
    """AVE: keeps the lowest-ranked products with at least one extractable attribute."""

    def __init__(self, cfg: BuildConfig, sizes: SplitSizes) -> None:
        self.cfg = cfg
        self.sizes = sizes
        self._kept = BottomK[tuple[str, str, str, ProductText, list[dict]]](sizes.total)

    def attributes(self, meta: ItemMeta, text: ProductText) -> list[dict[str, str]]:
        """[{attribute, value, source}] for each detail whose value the shown text contains."""
        found = []
        for attribute, value in meta.details.items():
            value = value.strip()
            if not value or len(value) > self.cfg.ave_max_value_chars or JSON_LIKE.match(value):
                continue
            source = next((f for f, t in text.fields().items() if _contains(t, value)), None)
            if source is not None:
                found.append({"attribute": attribute, "value": value, "source": source})
        return found

    def observe(self, category: str, meta: ItemMeta, source: str = AMAZON) -> None:
        text = ProductText(meta, self.cfg)
        found = self.attributes(meta, text)
        if found:
            key = rank(self.cfg.seed, "AVE", meta.parent_asin)
            self._kept.offer(key, (source, category, meta.parent_asin, text, found))

    def build(self) -> RowStream:
        def make(split: str, kept: tuple[str, str, str, ProductText, list[dict]]) -> dict:
            source, category, asin, text, found = kept
            shown = "\n".join(f"{name.capitalize()}: {t}" for name, t in text.fields().items())
            return make_row(
                "AVE",
                (asin,),
                input=shown,
                output=json.dumps(found, ensure_ascii=False),
                category=category,
                target_key=asin,
                source=source,
            )

        return fill_splits(self._kept.ranked(), self.sizes, make)


def price_band(price: float, category_prices: list[float]) -> str:
    """budget / mid-range / premium: the third of the category's sorted prices `price` is in."""
    position = bisect_right(category_prices, price) / max(1, len(category_prices))
    return PRICE_BANDS[min(len(PRICE_BANDS) - 1, int(position * len(PRICE_BANDS)))]


def item_profile(
    meta: ItemMeta, category: str, category_prices: list[float], title_chars: int
) -> str:
    """The IP reference: what the item is, who sells it, its price band, how it is rated."""
    name = clip(meta.title, title_chars)
    topic = leaf_topic(meta, category)
    sentences = [f"{name} is a {topic} product" + (f" from {meta.store}." if meta.store else ".")]
    if meta.price is None:
        sentences.append("Its price is not listed.")
    else:
        band = price_band(meta.price, category_prices)
        sentences.append(f"At ${meta.price:.2f} it is {band} for {meta.main_category or category}.")
    if meta.average_rating is None:
        sentences.append("It has no ratings yet.")
    else:
        verdict = next(text for floor, text in VERDICTS if meta.average_rating >= floor)
        count = f" over {meta.rating_number} ratings" if meta.rating_number else ""
        sentences.append(f"Rated {meta.average_rating:.1f} of 5{count}: {verdict}.")
    return " ".join(sentences)


class ItemProfileTask:
    """IP: keeps the lowest-ranked products' metadata; rows are made once prices are known."""

    def __init__(self, cfg: BuildConfig, sizes: SplitSizes) -> None:
        self.cfg = cfg
        self.sizes = sizes
        self._kept = BottomK[tuple[str, ItemMeta]](sizes.total)

    def observe(self, category: str, meta: ItemMeta, source: str = AMAZON) -> None:
        self._kept.offer(rank(self.cfg.seed, "IP", meta.parent_asin), (category, meta))

    def build(self, catalog: Catalog) -> RowStream:
        prices: dict[str, list[float]] = {}

        def make(split: str, kept: tuple[str, ItemMeta]) -> dict:
            category, meta = kept
            if category not in prices:
                prices[category] = catalog.prices(category)
            text = ProductText(meta, self.cfg)
            lines = [f"Title: {text.title}"]
            if meta.categories:
                lines.append(f"Categories: {' > '.join(meta.categories)}")
            if meta.store:
                lines.append(f"Store: {meta.store}")
            if meta.price is not None:
                lines.append(f"Price: ${meta.price:.2f}")
            if meta.average_rating is not None:
                lines.append(
                    f"Rating: {meta.average_rating:.1f} ({meta.rating_number or 0} ratings)"
                )
            if text.features:
                lines.append(f"Features: {text.features}")
            return make_row(
                "IP",
                (meta.parent_asin,),
                input="\n".join(lines),
                output=item_profile(meta, category, prices[category], self.cfg.title_chars),
                category=category,
                target_key=meta.parent_asin,
                source=catalog[meta.parent_asin].source,
            )

        return fill_splits(self._kept.ranked(), self.sizes, make)
