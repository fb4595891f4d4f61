"""Streaming readers for the raw sources; each yields recfound.data.records types.

Formats, required fields and coercions: docs/data-formats.md. Every reader streams its file
and raises recfound.errors.DataError naming the file, the line or row, and the reason; a file
with several bad lines raises once at its end with the total and the first ten
(common.BadLinesError). Lines are bounded by build.max_line_bytes (`line_limit`); a source
holding one file twice is refused by `refuse_copies`.
"""

from recfound.data.readers.amazon_google import read_match_pairs, read_match_products
from recfound.data.readers.amazon_reviews import read_item_meta, read_reviews
from recfound.data.readers.amazon_reviews_2018 import read_item_meta_2018, read_reviews_2018
from recfound.data.readers.amazonqa import read_amazonqa
from recfound.data.readers.common import (
    NOTE_READ_AS_UTF8,
    NOTE_UNNAMED_VALUES,
    BadLinesError,
    LineTooLongError,
    line_limit,
)
from recfound.data.readers.copies import refuse_copies
from recfound.data.readers.discover import (
    AmazonGoogleFiles,
    EsciFiles,
    MovieLensFiles,
    RawSources,
    ReviewCategory,
    discover_sources,
)
from recfound.data.readers.esci import read_esci
from recfound.data.readers.movielens import (
    read_movie_tags,
    read_movie_users,
    read_movies,
    read_ratings,
)

__all__ = [
    "NOTE_READ_AS_UTF8",
    "NOTE_UNNAMED_VALUES",
    "AmazonGoogleFiles",
    "BadLinesError",
    "EsciFiles",
    "LineTooLongError",
    "MovieLensFiles",
    "RawSources",
    "ReviewCategory",
    "discover_sources",
    "line_limit",
    "read_amazonqa",
    "read_esci",
    "read_item_meta",
    "read_item_meta_2018",
    "read_match_pairs",
    "read_match_products",
    "read_movie_tags",
    "read_movie_users",
    "read_movies",
    "read_ratings",
    "read_reviews",
    "read_reviews_2018",
    "refuse_copies",
]
