"""The compact item table every task draws item texts and same-category negatives from.

One small record per item (title cut to `title_chars`, category, topics, store, price), not the
raw metadata: the catalogue of a real category has millions of items. Tasks that need an item's
full metadata (AVE, IP) keep their own bounded selection while the metadata streams by.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from recfound.config import BuildConfig
from recfound.data.ingest import DUPLICATE_ITEM, REPEATED_TITLE, IngestReport
from recfound.data.readers import RawSources, read_item_meta, read_movies
from recfound.data.records import ItemMeta
from recfound.data.tasks.common import CategoryPools, clip, progress

MOVIES_CATEGORY = "Movies"


@dataclass(frozen=True, slots=True)
class ItemInfo:
    """What prompts and passages show of an item."""

    title: str
    category: str  # the pool negatives are drawn from: the Amazon file's category, "Movies", ...
    topics: tuple[str, ...]  # finest categories (or genres), for profiles
    store: str = ""
    price: float | None = None
    source: str = "amazon_reviews"  # the raw source that lists it (per-source results)


def scoped_id(variant: str, raw_id: str) -> str:
    """A MovieLens user or item id that cannot collide with Amazon's or another variant's."""
    return f"{variant}:{raw_id}"


def same_title_key(title: str) -> str:
    """What two listings of one movie share: the title with its year, blanks and case aside."""
    return " ".join(title.split()).casefold()


def leaf_topic(meta: ItemMeta, category: str) -> str:
    """The finest category the metadata names: the last of `categories`, else the main one."""
    return (meta.categories[-1] if meta.categories else meta.main_category) or category


class Catalog:
    """Item id -> ItemInfo, plus same-category pools (built once the table is complete)."""

    def __init__(self, cfg: BuildConfig) -> None:
        self.cfg = cfg
        self.items: dict[str, ItemInfo] = {}
        self.bought_together: dict[str, tuple[str, ...]] = {}
        self._pools: CategoryPools | None = None

    def add(self, item_id: str, info: ItemInfo) -> bool:
        """Add an item; False (and nothing changes) when it is listed already: first wins."""
        if item_id in self.items:
            return False
        self.items[item_id] = info
        self._pools = None
        return True

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.items

    def __getitem__(self, item_id: str) -> ItemInfo:
        return self.items[item_id]

    @property
    def pools(self) -> CategoryPools:
        if self._pools is None:
            self._pools = CategoryPools({i: info.category for i, info in self.items.items()})
        return self._pools

    def passage(self, item_id: str) -> str:
        """The item as an embedding passage: `title | topic | store | $price`."""
        info = self.items[item_id]
        parts = [info.title, info.topics[0] if info.topics else "", info.store]
        if info.price is not None:
            parts.append(f"${info.price:.2f}")
        return " | ".join(p for p in parts if p)

    def prices(self, category: str) -> list[float]:
        return sorted(
            info.price
            for info in self.items.values()
            if info.category == category and info.price is not None
        )


MetaObserver = Callable[[str, ItemMeta, str], None]


def load_catalog(
    sources: RawSources,
    cfg: BuildConfig,
    observers: Iterable[MetaObserver] = (),
    report: IngestReport | None = None,
) -> Catalog:
    """Stream every `meta_<Category>` file and MovieLens movie file into a Catalog.

    Each observer also sees every (category, ItemMeta, source) of a first listing as it
    streams by; a repeated listing is dropped and counted in the ingest report. A MovieLens
    title (title and year) listed again, under another id or by another set, stays its own
    item (ids are never merged across sets) and is counted as a note (REPEATED_TITLE).
    """
    catalog = Catalog(cfg)
    report = report or IngestReport()
    observers = tuple(observers)
    for source, files in sources.amazon_categories():
        counts = report.file(source, files.meta)
        for meta in progress(
            read_item_meta(files.meta, notes=counts.notes), f"items {files.category}"
        ):
            counts.read += 1
            info = ItemInfo(
                title=clip(meta.title, cfg.title_chars),
                category=files.category,
                topics=(leaf_topic(meta, files.category),),
                store=meta.store,
                price=meta.price,
                source=source,
            )
            if not catalog.add(meta.parent_asin, info):
                counts.drop(DUPLICATE_ITEM, f"item {meta.parent_asin}")
                continue
            if meta.bought_together:
                catalog.bought_together[meta.parent_asin] = meta.bought_together
            for observe in observers:
                observe(files.category, meta, source)
    titles: set[str] = set()  # every MovieLens title listed so far, whatever the set
    for files in sources.movielens:
        counts = report.file("movielens", files.movies)
        for movie in read_movies(files.movies, notes=counts.notes):
            counts.read += 1
            info = ItemInfo(
                title=clip(movie.title, cfg.title_chars),
                category=MOVIES_CATEGORY,
                topics=movie.genres or (MOVIES_CATEGORY,),
                source="movielens",
            )
            if not catalog.add(scoped_id(files.variant, movie.item_id), info):
                counts.drop(DUPLICATE_ITEM, f"movie {movie.item_id}")
                continue
            if (title := same_title_key(movie.title)) in titles:
                counts.notes[REPEATED_TITLE] += 1
            titles.add(title)
    return catalog
