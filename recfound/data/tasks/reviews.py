"""SA: a review -> its star rating as a letter, A (1 star) to E (5 stars).

Reviews stream by once; per star rating the lowest-ranked ones are kept (a bounded heap), and
the splits take the ratings in turn, so each split is as balanced as the data allow (macro-F1
is the metric).
"""

from __future__ import annotations

from recfound.config import BuildConfig
from recfound.data.records import Review
from recfound.data.tasks.common import (
    LETTERS,
    BottomK,
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


class SentimentTask:
    """Keeps, per star rating, the lowest-ranked reviews seen."""

    def __init__(self, cfg: BuildConfig, sizes: SplitSizes) -> None:
        self.cfg = cfg
        self.sizes = sizes
        self._kept = {stars: BottomK[tuple[str, Review]](sizes.total) for stars in STARS}

    def observe(self, category: str, review: Review) -> None:
        if not (review.title.strip() or review.text.strip()):
            return
        stars = min(max(round(review.rating), STARS[0]), STARS[-1])
        key = rank(self.cfg.seed, "SA", review.user_id, review.parent_asin, review.timestamp)
        self._kept[stars].offer(key, (category, review))

    def build(self) -> dict[str, list[dict]]:
        cfg = self.cfg

        def make(split: str, kept: tuple[str, Review]) -> dict:
            category, review = kept
            stars = min(max(round(review.rating), STARS[0]), STARS[-1])
            keys = (review.user_id, review.parent_asin, review.timestamp)
            return make_row(
                "SA",
                keys,
                input=f"Title: {clip(review.title, cfg.title_chars)}\n"
                f"Review: {clip(review.text, cfg.text_chars)}\nOptions: {SA_OPTION_TEXT}",
                output=SA_OPTIONS[STARS.index(stars)],
                options=SA_OPTIONS,
                category=category,
                user_id=review.user_id,
                target_key=":".join(str(k) for k in keys),
                source=AMAZON,
            )

        ranked = interleave({str(stars): heap.ranked() for stars, heap in self._kept.items()})
        return fill_splits(ranked, self.sizes, make)
