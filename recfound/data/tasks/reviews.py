"""SA: a review -> its star rating as a letter, A (1 star) to E (5 stars).

Reviews stream by once; per star rating the lowest-ranked ones are kept (a bounded heap), and
the splits take the ratings in turn, so each split is as balanced as the data allow (macro-F1
is the metric).
"""

from __future__ import annotations

from dataclasses import dataclass

from recfound.config import BuildConfig
from recfound.data.records import Review
from recfound.data.tasks.common import (
    LETTERS,
    BottomK,
    RowStream,
    SplitSizes,
    clip,
    fill_splits,
    interleave,
    make_row,
    rank,
)
from recfound.data.tasks.interactions import AMAZON

STARS = (1, 2, 3, 4, 5)
SA_OPTIONS = tuple(LETTERS[: len(STARS)])
SA_OPTION_TEXT = ", ".join(
    f"{letter}. {stars} star{'s' if stars > 1 else ''}"
    for letter, stars in zip(SA_OPTIONS, STARS, strict=True)
)


@dataclass(frozen=True, slots=True)
class _Kept:
    """What an SA row needs of a review, texts already cut: all reviews may be kept."""

    source: str
    category: str
    user_id: str
    parent_asin: str
    timestamp: int
    stars: int
    title: str
    text: str


class SentimentTask:
    """Keeps, per star rating, the lowest-ranked reviews seen (all of them when uncapped)."""

    def __init__(self, cfg: BuildConfig, sizes: SplitSizes) -> None:
        self.cfg = cfg
        self.sizes = sizes
        self._kept = {stars: BottomK[_Kept](sizes.total) for stars in STARS}

    def observe(self, category: str, review: Review, source: str = AMAZON) -> None:
        if not (review.title.strip() or review.text.strip()):
            return
        stars = min(max(round(review.rating), STARS[0]), STARS[-1])
        key = rank(self.cfg.seed, "SA", review.user_id, review.parent_asin, review.timestamp)
        kept = _Kept(
            source,
            category,
            review.user_id,
            review.parent_asin,
            review.timestamp,
            stars,
            clip(review.title, self.cfg.title_chars),
            clip(review.text, self.cfg.text_chars),
        )
        self._kept[stars].offer(key, kept)

    def build(self) -> RowStream:
        def make(split: str, kept: _Kept) -> dict:
            keys = (kept.user_id, kept.parent_asin, kept.timestamp)
            return make_row(
                "SA",
                keys,
                input=f"Title: {kept.title}\nReview: {kept.text}\nOptions: {SA_OPTION_TEXT}",
                output=SA_OPTIONS[STARS.index(kept.stars)],
                options=SA_OPTIONS,
                category=kept.category,
                user_id=kept.user_id,
                target_key=":".join(str(k) for k in keys),
                source=kept.source,
            )

        ranked = interleave({str(stars): heap.ranked() for stars, heap in self._kept.items()})
        return fill_splits(ranked, self.sizes, make)
