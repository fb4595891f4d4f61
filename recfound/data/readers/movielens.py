"""MovieLens ml-100k and ml-1m: ratings, movies and users, variant told by the file name.

ml-100k: `u.data` (tab-separated user, item, rating, timestamp), `u.item` (pipe-separated,
19 genre flags), `u.user` (id|age|gender|occupation|zip). ml-1m: `ratings.dat`, `movies.dat`
(genres joined by '|'), `users.dat`, all '::'-separated; ages are the dataset's age-group
codes and occupations its numeric codes, mapped here to the names its README gives.
GroupLens ships these files in ISO-8859-1 (titles such as "Misérables"), so they are read so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from recfound.data.readers.common import Fields, iter_delimited
from recfound.data.records import Movie, MovieUser, Rating
from recfound.errors import DataError

ENCODING = "iso-8859-1"
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
ML100K_ITEM_HEAD = ("item_id", "title", "release_date", "video_release_date", "imdb_url")
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
RATING_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class _Layout:
    """How one MovieLens file is laid out: separator and column names."""

    variant: str
    separator: str
    columns: tuple[str, ...]


RATINGS = {
    "u.data": _Layout("ml-100k", "\t", RATING_COLUMNS),
    "ratings.dat": _Layout("ml-1m", "::", RATING_COLUMNS),
}
MOVIES = {
    "u.item": _Layout("ml-100k", "|", ML100K_ITEM_HEAD + ML100K_GENRES),
    "movies.dat": _Layout("ml-1m", "::", ("item_id", "title", "genres")),
}
USERS = {
    "u.user": _Layout("ml-100k", "|", ("user_id", "age", "gender", "occupation", "zip_code")),
    "users.dat": _Layout("ml-1m", "::", ("user_id", "gender", "age", "occupation", "zip_code")),
}


def _layout(path: Path, layouts: dict[str, _Layout]) -> _Layout:
    try:
        return layouts[path.name]
    except KeyError:
        expected = " or ".join(layouts)
        raise DataError(
            path, f"cannot tell the MovieLens variant from the file name; expected {expected}"
        ) from None


def _rows(path: Path, layout: _Layout) -> Iterator[Fields]:
    for line_no, values in iter_delimited(path, layout.separator, len(layout.columns), ENCODING):
        yield Fields(path, line_no, dict(zip(layout.columns, values, strict=True)))


def read_ratings(path: str | Path) -> Iterator[Rating]:
    """Stream `u.data` (ml-100k) or `ratings.dat` (ml-1m); timestamps are epoch seconds."""
    path = Path(path)
    for fields in _rows(path, _layout(path, RATINGS)):
        yield Rating(
            user_id=fields.ident("user_id"),
            item_id=fields.ident("item_id"),
            rating=fields.parsed_float("rating"),
            timestamp=fields.parsed_int("timestamp"),
        )


def _ml100k_genres(fields: Fields) -> tuple[str, ...]:
    genres = []
    for genre in ML100K_GENRES:
        flag = fields.text(genre).strip()
        if flag not in ("0", "1"):
            raise fields.error(f"genre flag '{genre}' must be 0 or 1, got {flag!r}")
        if flag == "1":
            genres.append(genre)
    return tuple(genres)


def read_movies(path: str | Path) -> Iterator[Movie]:
    """Stream `u.item` (ml-100k, genre flags) or `movies.dat` (ml-1m, '|'-joined genres)."""
    path = Path(path)
    layout = _layout(path, MOVIES)
    for fields in _rows(path, layout):
        if layout.variant == "ml-100k":
            genres = _ml100k_genres(fields)
        else:
            genres = tuple(g for g in fields.text("genres").split("|") if g)
        yield Movie(item_id=fields.ident("item_id"), title=fields.text("title"), genres=genres)


def _occupation(fields: Fields, variant: str) -> str:
    """ml-100k writes occupation names; ml-1m writes codes, mapped to the README's names."""
    if variant == "ml-100k":
        return fields.ident("occupation")
    code = fields.parsed_int("occupation")
    if not 0 <= code < len(ML1M_OCCUPATIONS):
        raise fields.error(f"occupation code must be 0..{len(ML1M_OCCUPATIONS) - 1}, got {code}")
    return ML1M_OCCUPATIONS[code]


def read_movie_users(path: str | Path) -> Iterator[MovieUser]:
    """Stream `u.user` (ml-100k) or `users.dat` (ml-1m)."""
    path = Path(path)
    layout = _layout(path, USERS)
    for fields in _rows(path, layout):
        yield MovieUser(
            user_id=fields.ident("user_id"),
            gender=fields.ident("gender"),
            age=fields.parsed_int("age"),
            occupation=_occupation(fields, layout.variant),
            zip_code=fields.text("zip_code"),
        )
