"""MovieLens: ratings, movies, users and tags, the layout told by the file name.

ml-100k: `u.data` (tab-separated user, item, rating, timestamp), `u.item` (pipe-separated,
19 genre flags), `u.user` (id|age|gender|occupation|zip). ml-1m: `ratings.dat`, `movies.dat`
(genres joined by '|'), `users.dat`, all '::'-separated; ages are the dataset's age-group
codes and occupations its numeric codes, mapped here to the names its README gives.
GroupLens ships these files in ISO-8859-1 (titles such as "Misérables"), so they are read so,
unless a file's bytes are valid UTF-8 with multibyte characters (a re-encoded copy): then it
is read as UTF-8 and its lines with such characters are counted in `notes`.
The CSV sets (ml-latest, ml-latest-small, ml-20m, ml-25m): UTF-8 `ratings.csv`, `movies.csv`
and `tags.csv` with a header line, half-star ratings 0.5-5, no users file.
Every layout writes timestamps in seconds; the column names below are the CSV sets' headers,
used for the header-less layouts too so that messages name a field the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

from recfound.data.readers.common import (
    LATIN1,
    SECONDS,
    BadLines,
    Clock,
    Fields,
    iter_csv_rows,
    iter_delimited,
    parse_rows,
    quoted,
)
from recfound.data.records import Movie, MovieTag, MovieUser, Rating
from recfound.errors import DataError

T = TypeVar("T")
CLOCK = Clock("MovieLens", SECONDS)
WHOLE_STARS = (1.0, 5.0)  # ml-100k, ml-1m
HALF_STARS = (0.5, 5.0)  # the CSV sets
# The CSV sets' genres value for a movie without genres.
NO_GENRES = "(no genres listed)"
# ml-100k `u.item`: the 19 genre flags, in column order (as listed in `u.genre`).
ML100K_GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
ML100K_ITEM_HEAD = ("movieId", "title", "release_date", "video_release_date", "imdb_url")
# ml-1m `users.dat`: occupation codes 0..20, named as in the ml-1m README.
ML1M_OCCUPATIONS = (
    "other",
    "academic/educator",
    "artist",
    "clerical/admin",
    "college/grad student",
    "customer service",
    "doctor/health care",
    "executive/managerial",
    "farmer",
    "homemaker",
    "K-12 student",
    "lawyer",
    "programmer",
    "retired",
    "sales/marketing",
    "scientist",
    "self-employed",
    "technician/engineer",
    "tradesman/craftsman",
    "unemployed",
    "writer",
)
RATING_COLUMNS = ("userId", "movieId", "rating", "timestamp")
MOVIE_COLUMNS = ("movieId", "title", "genres")
TAG_COLUMNS = ("userId", "movieId", "tag", "timestamp")


@dataclass(frozen=True)
class _Layout:
    """How one MovieLens file is laid out: its separator (None: CSV with a header line), its
    columns (for CSV: those the header must name) and, for ratings, the rating scale."""

    variant: str
    separator: str | None
    columns: tuple[str, ...]
    stars: tuple[float, float] = WHOLE_STARS


RATINGS = {
    "u.data": _Layout("ml-100k", "\t", RATING_COLUMNS),
    "ratings.dat": _Layout("ml-1m", "::", RATING_COLUMNS),
    "ratings.csv": _Layout("csv", None, RATING_COLUMNS, HALF_STARS),
}
MOVIES = {
    "u.item": _Layout("ml-100k", "|", ML100K_ITEM_HEAD + ML100K_GENRES),
    "movies.dat": _Layout("ml-1m", "::", MOVIE_COLUMNS),
    "movies.csv": _Layout("csv", None, MOVIE_COLUMNS),
}
USERS = {
    "u.user": _Layout("ml-100k", "|", ("userId", "age", "gender", "occupation", "zip_code")),
    "users.dat": _Layout("ml-1m", "::", ("userId", "gender", "age", "occupation", "zip_code")),
}
TAGS = {"tags.csv": _Layout("csv", None, TAG_COLUMNS)}


def _layout(path: Path, layouts: dict[str, _Layout]) -> _Layout:
    try:
        return layouts[path.name]
    except KeyError:
        *others, last = layouts
        expected = f"{', '.join(others)} or {last}" if others else last
        raise DataError(
            path, f"cannot tell the MovieLens layout from the file name; expected {expected}"
        ) from None


def _rows(
    path: Path, layout: _Layout, bad: BadLines, notes: Counter[str] | None
) -> Iterator[tuple[int, dict[str, str]]]:
    if layout.separator is None:
        yield from iter_csv_rows(path, layout.columns, bad, notes)
        return
    lines = iter_delimited(path, layout.separator, len(layout.columns), LATIN1, bad, notes)
    for line_no, values in lines:
        yield line_no, dict(zip(layout.columns, values, strict=True))


def _read(
    path: str | Path,
    layouts: dict[str, _Layout],
    parse: Callable[[_Layout, Fields], T],
    notes: Counter[str] | None = None,
) -> Iterator[T]:
    """`parse` of every record of a MovieLens file, its layout told by the file name."""
    path = Path(path)
    layout = _layout(path, layouts)
    bad = BadLines(path)
    yield from parse_rows(_rows(path, layout, bad, notes), partial(parse, layout), bad)


def _rating(layout: _Layout, fields: Fields) -> Rating:
    return Rating(
        user_id=fields.ident("userId"),
        item_id=fields.ident("movieId"),
        rating=fields.within("rating", fields.parsed_float("rating"), *layout.stars),
        timestamp=fields.parsed_timestamp("timestamp", CLOCK),
    )


def read_ratings(path: str | Path, notes: Counter[str] | None = None) -> Iterator[Rating]:
    """Stream `u.data` (ml-100k), `ratings.dat` (ml-1m) or `ratings.csv` (CSV sets).

    Timestamps are epoch seconds; a rating outside the layout's scale (1-5; 0.5-5 for the
    CSV sets) is an error. `notes`, when given, counts what a CSV file held that was ignored
    (common.iter_csv_rows), and the lines of a Latin-1 layout read as UTF-8
    (common.iter_delimited).
    """
    return _read(path, RATINGS, _rating, notes)


def _ml100k_genres(fields: Fields) -> tuple[str, ...]:
    genres = []
    for genre in ML100K_GENRES:
        flag = fields.text(genre).strip()
        if flag not in ("0", "1"):
            raise fields.error(f"genre flag '{genre}' must be 0 or 1, got {quoted(flag)}")
        if flag == "1":
            genres.append(genre)
    return tuple(genres)


def _joined_genres(fields: Fields) -> tuple[str, ...]:
    """'|'-joined genres; empty and "(no genres listed)" mean none."""
    return tuple(g for g in fields.text("genres").split("|") if g and g != NO_GENRES)


def _movie(layout: _Layout, fields: Fields) -> Movie:
    genres = _ml100k_genres(fields) if layout.variant == "ml-100k" else _joined_genres(fields)
    return Movie(item_id=fields.ident("movieId"), title=fields.text("title"), genres=genres)


def read_movies(path: str | Path, notes: Counter[str] | None = None) -> Iterator[Movie]:
    """Stream `u.item` (ml-100k, genre flags), `movies.dat` (ml-1m) or `movies.csv` (CSV sets).

    `notes`: as for read_ratings.
    """
    return _read(path, MOVIES, _movie, notes)


def _tag(layout: _Layout, fields: Fields) -> MovieTag:
    return MovieTag(
        user_id=fields.ident("userId"),
        item_id=fields.ident("movieId"),
        tag=fields.text("tag"),
        timestamp=fields.parsed_timestamp("timestamp", CLOCK),
    )


def read_movie_tags(path: str | Path, notes: Counter[str] | None = None) -> Iterator[MovieTag]:
    """Stream `tags.csv` (CSV sets); timestamps are epoch seconds. `notes`: as for read_ratings."""
    return _read(path, TAGS, _tag, notes)


def _occupation(fields: Fields, variant: str) -> str:
    """ml-100k writes occupation names; ml-1m writes codes, mapped to the README's names."""
    if variant == "ml-100k":
        return fields.ident("occupation")
    code = fields.parsed_int("occupation")
    if not 0 <= code < len(ML1M_OCCUPATIONS):
        raise fields.error(
            f"occupation code must be 0..{len(ML1M_OCCUPATIONS) - 1}, got {quoted(code)}"
        )
    return ML1M_OCCUPATIONS[code]


def _user(layout: _Layout, fields: Fields) -> MovieUser:
    return MovieUser(
        user_id=fields.ident("userId"),
        gender=fields.ident("gender"),
        age=fields.parsed_int("age"),
        occupation=_occupation(fields, layout.variant),
        zip_code=fields.text("zip_code"),
    )


def read_movie_users(path: str | Path, notes: Counter[str] | None = None) -> Iterator[MovieUser]:
    """Stream `u.user` (ml-100k) or `users.dat` (ml-1m); the CSV sets have no users file.

    `notes`: as for read_ratings.
    """
    return _read(path, USERS, _user, notes)
