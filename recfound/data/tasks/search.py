"""Q2I and QR from the ESCI Shopping Queries judgements (and their loading, shared with PRP).

Both follow ESCI's own split: its "test" queries make the test rows, its "train" queries the
validation and training rows, so a query never crosses splits.
Q2I: query -> one of its E (exact) products; negatives from the positive's category, the
query's own C and I products first (hard negatives), never one of its E or S products.
QR: query -> the query respelled against the exact product's title: each word that is not a
title word is replaced by the closest title word (difflib ratio >= qr_match_cutoff), which
fixes typos and product-naming variants; rows that needed a rewrite and rows that did not
are interleaved, half and half where the data allow.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from recfound.config import BuildConfig
from recfound.data.ingest import IngestReport
from recfound.data.readers import RawSources, read_esci
from recfound.data.tasks.catalog import Catalog, ItemInfo
from recfound.data.tasks.common import (
    RowStream,
    SplitSizes,
    clip,
    fill_splits,
    interleave,
    make_row,
    progress,
    rank,
    rng_for,
)

SOURCE = "esci"
WORD = re.compile(r"[\w'&+.-]+")


@dataclass
class EsciQuery:
    """One query and its judged products, in file order."""

    query_id: int
    query: str
    split: str
    judged: list[tuple[str, str]] = field(default_factory=list)  # (product id, E/S/C/I)

    def products(self, *labels: str) -> list[str]:
        return [pid for pid, label in self.judged if label in labels]

    @property
    def held_splits(self) -> tuple[str, ...]:
        """The unified splits this query may go to: ESCI test -> test, else val/train."""
        return ("test",) if self.split == "test" else ("validation", "train")


def esci_category(locale: str) -> str:
    """Pool of the ESCI products the Amazon metadata does not list."""
    return f"ESCI {locale}"


def load_esci(
    sources: RawSources, catalog: Catalog, cfg: BuildConfig, report: IngestReport | None = None
) -> list[EsciQuery]:
    """The queries of `cfg.esci_locale`; their products join the catalogue when it lacks them.

    Judgements of other locales are counted as filtered in the ingest report.
    """
    queries: dict[int, EsciQuery] = {}
    report = report or IngestReport()
    for files in sources.esci:
        counts = report.file(SOURCE, files.examples)
        for example in progress(read_esci(files.examples, files.products), "esci"):
            counts.read += 1
            if example.product_locale != cfg.esci_locale:
                counts.drop(
                    f"locale {example.product_locale} (build.esci_locale: {cfg.esci_locale})",
                    f"example {example.example_id}",
                    filtered=True,
                )
                continue
            if example.product_id not in catalog:
                catalog.add(
                    example.product_id,
                    ItemInfo(
                        title=clip(example.product_title, cfg.title_chars),
                        category=esci_category(example.product_locale),
                        topics=(esci_category(example.product_locale),),
                        store=example.product_brand,
                        source=SOURCE,
                    ),
                )
            query = queries.setdefault(
                example.query_id, EsciQuery(example.query_id, example.query, example.split)
            )
            query.judged.append((example.product_id, example.esci_label))
    return list(queries.values())


def exact_product(query: EsciQuery, seed: int) -> str | None:
    """The E product a query's rows use (a seeded choice among its E products)."""
    exact = query.products("E")
    return (
        min(exact, key=lambda pid: (rank(seed, "E", query.query_id, pid), pid)) if exact else None
    )


def rewrite_query(query: str, title: str, cutoff: float) -> str:
    """`query` lower-cased, each word not in `title` replaced by its closest title word."""
    vocabulary = sorted(set(WORD.findall(title.lower())))
    words = []
    for word in query.lower().split():
        if word in vocabulary:
            words.append(word)
            continue
        match = difflib.get_close_matches(word, vocabulary, n=1, cutoff=cutoff)
        words.append(match[0] if match else word)
    return " ".join(words)


def build_q2i(
    queries: list[EsciQuery], catalog: Catalog, cfg: BuildConfig, sizes: SplitSizes
) -> RowStream:
    candidates = [q for q in queries if exact_product(q, cfg.seed) is not None]
    candidates.sort(key=lambda q: (rank(cfg.seed, "Q2I", q.query_id), q.query_id))

    def make(split: str, query: EsciQuery) -> dict | None:
        positive = exact_product(query, cfg.seed)
        category = catalog[positive].category
        wanted = cfg.hard_negatives if split == "train" else cfg.eval_negatives
        negatives = catalog.pools.sample(
            category,
            wanted,
            exclude=set(query.products("E", "S")),
            rng=rng_for(cfg.seed, "Q2I", "negatives", query.query_id),
            prefer=query.products("I", "C"),
        )
        if negatives is None:
            return None
        return make_row(
            "Q2I",
            (query.query_id, positive),
            input=query.query,
            positives=[catalog.passage(positive)],
            positive_ids=[positive],
            negatives=[catalog.passage(i) for i in negatives],
            negative_ids=negatives,
            category=category,
            target_key=f"{query.query_id}:{positive}",
            source=SOURCE,
        )

    return fill_splits(candidates, sizes, make, split_of=lambda q: q.held_splits)


def build_qr(
    queries: list[EsciQuery], catalog: Catalog, cfg: BuildConfig, sizes: SplitSizes
) -> RowStream:
    classes: dict[str, list[tuple[EsciQuery, str]]] = {"kept": [], "rewritten": []}
    for query in sorted(queries, key=lambda q: (rank(cfg.seed, "QR", q.query_id), q.query_id)):
        positive = exact_product(query, cfg.seed)
        if positive is None:
            continue
        rewrite = rewrite_query(query.query, catalog[positive].title, cfg.qr_match_cutoff)
        plain = " ".join(query.query.lower().split())
        classes["rewritten" if rewrite != plain else "kept"].append((query, rewrite))

    def make(split: str, candidate: tuple[EsciQuery, str]) -> dict:
        query, rewrite = candidate
        return make_row(
            "QR",
            (query.query_id,),
            input=f"Query: {query.query}",
            output=rewrite,
            category=catalog[exact_product(query, cfg.seed)].category,
            target_key=str(query.query_id),
            source=SOURCE,
        )

    return fill_splits(interleave(classes), sizes, make, split_of=lambda c: c[0].held_splits)
