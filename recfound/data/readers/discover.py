"""Find the raw source files under data/ in the documented layout (docs/data-formats.md).

A source whose directory is absent is simply not there (empty tuple): the builder decides
which sources it needs. A source directory that exists but lacks a required file is an
error naming the missing file, so a half-copied download never passes silently. So is a
file that looks like a source file under a near-miss name (`Books.JSONL`, `Ratings.csv`,
`u.data.txt`), which would otherwise be skipped without a word, and a dangling symlink.
Everything else found (READMEs, licences, files a layout has but the pipeline does not
read) is listed in `RawSources.ignored`, so the build can report what it left out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from recfound.errors import DataError

AMAZON_REVIEWS_DIR = "amazon_reviews"
AMAZON_REVIEWS_2018_DIR = "amazon_reviews_2018"
ESCI_DIR = "esci"
AMAZONQA_DIR = "amazonqa"
MOVIELENS_DIR = "movielens"
AMAZON_GOOGLE_DIR = "amazon_google"
# A source directory's name is the RawSources field its files go to, listed in this order.
SOURCE_DIRS = (
    AMAZON_REVIEWS_DIR,
    AMAZON_REVIEWS_2018_DIR,
    ESCI_DIR,
    AMAZONQA_DIR,
    MOVIELENS_DIR,
    AMAZON_GOOGLE_DIR,
)
# Directory names that mean a source directory under another name.
SOURCE_DIR_ALIASES = {"amazonreviews2014": AMAZON_REVIEWS_2018_DIR}
JSONL = ".jsonl"  # Amazon Reviews 2023 and AmazonQA
JSON = ".json"  # Amazon Reviews 2014 / 2018
GZ = ".gz"
# Ways a JSON or JSON Lines file name ends, longest first.
JSON_ENDINGS = (JSONL + GZ, JSON + GZ, JSONL, JSON)
META_PREFIX = "meta_"
REVIEWS_2014_PREFIX = "reviews_"
FIVE_CORE_SUFFIX = "_5"
ESCI_EXAMPLES = "shopping_queries_dataset_examples.parquet"
ESCI_PRODUCTS = "shopping_queries_dataset_products.parquet"
AMAZON_GOOGLE_FILES = ("tableA.csv", "tableB.csv", "train.csv", "valid.csv", "test.csv")
# Extensions that mark a data file: a known name's stem with one of these is a near-miss.
DATA_EXTENSIONS = frozenset(
    {".csv", ".tsv", ".txt", ".dat", ".data", ".json", ".jsonl", ".parquet", ".gz", ".zip"}
)


@dataclass(frozen=True)
class ReviewCategory:
    """One Amazon Reviews category: its review file, its item-metadata file, its release.

    release: "2023" (amazon_reviews/), or "2018" / "2014" (amazon_reviews_2018/, told by the
    review file's name), which decides the reader: read_reviews / read_reviews_2018 and
    read_item_meta / read_item_meta_2018.
    """

    category: str
    reviews: Path
    meta: Path
    release: str = "2023"


@dataclass(frozen=True)
class EsciFiles:
    """The ESCI examples and products parquet files."""

    examples: Path
    products: Path


@dataclass(frozen=True)
class MovieLensFiles:
    """One MovieLens set: its folder name (the variant, e.g. "ml-1m", "ml-latest-small") and
    files. `users` exists for ml-100k and ml-1m only; `tags` for the CSV sets, if present."""

    variant: str
    ratings: Path
    movies: Path
    users: Path | None = None
    tags: Path | None = None


@dataclass(frozen=True)
class AmazonGoogleFiles:
    """The two product tables and the three labelled pair files of Amazon-Google."""

    table_a: Path
    table_b: Path
    train: Path
    valid: Path
    test: Path


@dataclass(frozen=True)
class RawSources:
    """Every raw file found, per source; an empty tuple means the source is absent.

    `ignored`: what the source directories (and data/ itself) hold that is not read, sorted.
    """

    amazon_reviews: tuple[ReviewCategory, ...] = ()
    amazon_reviews_2018: tuple[ReviewCategory, ...] = ()
    esci: tuple[EsciFiles, ...] = ()
    amazonqa: tuple[Path, ...] = ()
    movielens: tuple[MovieLensFiles, ...] = ()
    amazon_google: tuple[AmazonGoogleFiles, ...] = ()
    ignored: tuple[Path, ...] = ()

    @property
    def present(self) -> tuple[str, ...]:
        """Names of the sources that have files, in declaration order."""
        return tuple(name for name in SOURCE_DIRS if getattr(self, name))

    def amazon_categories(self) -> tuple[tuple[str, ReviewCategory], ...]:
        """(source name, category files) of every Amazon Reviews release present."""
        return tuple(
            (name, files)
            for name in ("amazon_reviews", "amazon_reviews_2018")
            for files in getattr(self, name)
        )


@dataclass(frozen=True)
class _MovieLensLayout:
    """The file names of one MovieLens layout; `unused` are known files the pipeline skips."""

    ratings: str
    movies: str
    users: str | None = None
    tags: str | None = None
    unused: tuple[str, ...] = ()

    @property
    def read(self) -> tuple[str, ...]:
        return tuple(n for n in (self.ratings, self.movies, self.users, self.tags) if n)


MOVIELENS_LAYOUTS = (
    _MovieLensLayout("u.data", "u.item", users="u.user"),
    _MovieLensLayout("ratings.dat", "movies.dat", users="users.dat"),
    _MovieLensLayout(
        "ratings.csv",
        "movies.csv",
        tags="tags.csv",
        unused=("links.csv", "genome-scores.csv", "genome-tags.csv"),
    ),
)
MOVIELENS_NAMES = tuple(name for layout in MOVIELENS_LAYOUTS for name in layout.read)


def _entries(directory: Path) -> list[Path]:
    """What `directory` holds, sorted; a dangling symlink is an error naming it."""
    entries = sorted(directory.iterdir())
    for path in entries:
        if path.is_symlink() and not path.exists():
            raise DataError(path, f"dangling symbolic link: its target {os.readlink(path)} is gone")
    return entries


def _split_extension(name: str) -> tuple[str, str]:
    stem, dot, extension = name.rpartition(".")
    return (stem, dot + extension) if stem else (name, "")


def _near_misses(name: str, expected: Iterable[str]) -> list[str]:
    """The expected names `name` (none of them) looks like a mistyped copy of, closest first:
    the same but for letter case, else one plus an extension (`u.data.txt`), else one with
    another data-file extension (`ratings.txt`)."""
    folded = name.casefold()
    stem, extension = _split_extension(folded)
    targets = [(target, target.casefold()) for target in expected]
    rules: list[Callable[[str], bool]] = [
        lambda target: folded == target,
        lambda target: folded.startswith(target + "."),
        lambda target: stem == _split_extension(target)[0] and extension in DATA_EXTENSIONS,
    ]
    for rule in rules:
        if matches := [original for original, target in targets if rule(target)]:
            return matches
    return []


def _misnamed(path: Path, expected: Iterable[str], hint: str = "") -> DataError:
    return DataError(
        path, f"looks like a source file but is misnamed; expected {' or '.join(expected)}{hint}"
    )


def _reject_near_miss(path: Path, expected: Iterable[str]) -> None:
    """A file whose name is a near-miss of an expected name is an error naming both."""
    if matches := _near_misses(path.name, expected):
        raise _misnamed(path, matches)


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise DataError(path, f"required file is missing from {directory}")
    return path


def _json_base(name: str) -> tuple[str, bool] | None:
    """(name without its ending, gzipped) for a name ending like JSON or JSON Lines, any case."""
    for ending in JSON_ENDINGS:
        if len(name) > len(ending) and name[-len(ending) :].lower() == ending:
            return name[: -len(ending)], ending.endswith(GZ)
    return None


def _json_files(directory: Path, suffix: str, hint: str, ignored: list[Path]) -> dict[str, Path]:
    """Base name -> file for the `<base><suffix>[.gz]` files of `directory`.

    A file ending like JSON in another way (`.json` for `.jsonl`, upper case) is an error
    naming the expected name (plus `hint`); the same base both plain and gzipped is an error.
    """
    found: dict[str, Path] = {}
    for path in _entries(directory):
        parsed = None if path.name.startswith(".") else _json_base(path.name)
        if parsed is None or not path.is_file():
            ignored.append(path)
            continue
        base, gzipped = parsed
        expected = base + suffix + (GZ if gzipped else "")
        if path.name != expected:
            wrong_release = not path.name.lower().endswith((suffix, suffix + GZ))
            raise _misnamed(path, [expected], hint if wrong_release else "")
        if base in found:
            raise DataError(path, f"both {found[base].name} and {path.name} exist; keep one")
        found[base] = path
    return found


def _pair_categories(
    directory: Path,
    files: dict[str, Path],
    suffix: str,
    category_of: Callable[[str], tuple[str, str]],
) -> tuple[ReviewCategory, ...]:
    """Match each review file with its `meta_` file; `category_of(base)` gives (category,
    release) of a review file. A category with two review files, or one without its other
    half, is an error."""
    reviews: dict[str, tuple[Path, str]] = {}
    metas: dict[str, Path] = {}
    for base, path in files.items():
        if base.startswith(META_PREFIX):
            metas[base.removeprefix(META_PREFIX)] = path
            continue
        category, release = category_of(base)
        if category in reviews:
            other = reviews[category][0].name
            raise DataError(
                path, f"{other} and {path.name} both hold reviews of {category}; keep one"
            )
        reviews[category] = (path, release)
    if without_reviews := sorted(metas.keys() - reviews.keys()):
        category = without_reviews[0]
        raise DataError(
            directory / f"{category}{suffix}",
            f"required file is missing: the reviews belonging to {metas[category].name}",
        )
    if without_meta := sorted(reviews.keys() - metas.keys()):
        category = without_meta[0]
        raise DataError(
            directory / f"{META_PREFIX}{category}{suffix}",
            f"required file is missing: the item metadata for {reviews[category][0].name}",
        )
    return tuple(
        ReviewCategory(category, path, metas[category], release)
        for category, (path, release) in sorted(reviews.items())
    )


def _amazon_reviews(directory: Path, ignored: list[Path]) -> tuple[ReviewCategory, ...]:
    hint = f" (2014/2018 .json files belong in {AMAZON_REVIEWS_2018_DIR}/)"
    files = _json_files(directory, JSONL, hint, ignored)
    if not files:
        raise DataError(directory, "no <Category>.jsonl[.gz] review file found")
    return _pair_categories(directory, files, JSONL, lambda base: (base, "2023"))


def _category_2014_2018(base: str) -> tuple[str, str]:
    """(category, release) of a review file: `reviews_<Category>[_5]` is 2014, else 2018."""
    release = "2014" if base.startswith(REVIEWS_2014_PREFIX) else "2018"
    return base.removeprefix(REVIEWS_2014_PREFIX).removesuffix(FIVE_CORE_SUFFIX), release


def _amazon_reviews_2018(directory: Path, ignored: list[Path]) -> tuple[ReviewCategory, ...]:
    hint = f" (Amazon Reviews 2023 .jsonl files belong in {AMAZON_REVIEWS_DIR}/)"
    files = _json_files(directory, JSON, hint, ignored)
    if not files:
        raise DataError(
            directory, "no <Category>[_5].json[.gz] or reviews_<Category>[_5].json[.gz] found"
        )
    return _pair_categories(directory, files, JSON, _category_2014_2018)


def _amazonqa(directory: Path, ignored: list[Path]) -> tuple[Path, ...]:
    files = _json_files(directory, JSONL, "", ignored)
    if not files:
        raise DataError(directory, "no AmazonQA file (*.jsonl or *.jsonl.gz) found")
    return tuple(files[base] for base in sorted(files))


def _fixed_files(directory: Path, names: tuple[str, ...], ignored: list[Path]) -> list[Path]:
    """The files `names` of `directory`, all required; near-miss names are errors."""
    for path in _entries(directory):
        if path.name not in names:
            _reject_near_miss(path, names)
            ignored.append(path)
    return [_require(directory, name) for name in names]


def _esci(directory: Path, ignored: list[Path]) -> tuple[EsciFiles, ...]:
    return (EsciFiles(*_fixed_files(directory, (ESCI_EXAMPLES, ESCI_PRODUCTS), ignored)),)


def _amazon_google(directory: Path, ignored: list[Path]) -> tuple[AmazonGoogleFiles, ...]:
    return (AmazonGoogleFiles(*_fixed_files(directory, AMAZON_GOOGLE_FILES, ignored)),)


def _movielens_set(folder: Path, ignored: list[Path]) -> MovieLensFiles | None:
    """The MovieLens set in `folder`, told by its files; None when it holds none."""
    entries = _entries(folder)
    names = {path.name for path in entries}
    for path in entries:
        if path.name not in MOVIELENS_NAMES:
            _reject_near_miss(path, MOVIELENS_NAMES)
            ignored.append(path)
    layouts = [layout for layout in MOVIELENS_LAYOUTS if names & set(layout.read)]
    if not layouts:
        return None
    if len(layouts) > 1:
        mixed = " and ".join(layout.ratings for layout in layouts)
        raise DataError(folder, f"holds files of two MovieLens layouts ({mixed}); keep one")
    (layout,) = layouts
    tags = folder / layout.tags if layout.tags else None
    return MovieLensFiles(
        variant=folder.name,
        ratings=_require(folder, layout.ratings),
        movies=_require(folder, layout.movies),
        users=_require(folder, layout.users) if layout.users else None,
        tags=tags if tags is not None and tags.is_file() else None,
    )


def _movielens(directory: Path, ignored: list[Path]) -> tuple[MovieLensFiles, ...]:
    found = []
    for path in _entries(directory):
        if path.is_dir() and not path.name.startswith("."):
            if (files := _movielens_set(path, ignored)) is not None:
                found.append(files)
            continue
        if path.name in MOVIELENS_NAMES:
            raise DataError(path, f"MovieLens files go in a folder per set: {MOVIELENS_DIR}/<set>/")
        _reject_near_miss(path, MOVIELENS_NAMES)
        ignored.append(path)
    if not found:
        expected = " or ".join("/".join(layout.read) for layout in MOVIELENS_LAYOUTS)
        raise DataError(
            directory, f"no MovieLens variant found; expected {directory}/<set>/ holding {expected}"
        )
    return tuple(found)


# Written by `recfound data sample` beside the sample's files (recfound.data.bundled).
SAMPLE_MANIFEST = ".recfound-sample.json"

SOURCE_FINDERS: dict[str, Callable[[Path, list[Path]], tuple]] = {
    AMAZON_REVIEWS_DIR: _amazon_reviews,
    AMAZON_REVIEWS_2018_DIR: _amazon_reviews_2018,
    ESCI_DIR: _esci,
    AMAZONQA_DIR: _amazonqa,
    MOVIELENS_DIR: _movielens,
    AMAZON_GOOGLE_DIR: _amazon_google,
}


def _squashed(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.casefold())


def _reject_misnamed_source_dir(path: Path) -> None:
    """A directory of data/ named like a source directory but not exactly is an error."""
    squashed = _squashed(path.name)
    for name in SOURCE_DIRS:
        if squashed == _squashed(name) or SOURCE_DIR_ALIASES.get(squashed) == name:
            raise DataError(path, f"looks like a source directory but is misnamed; expected {name}")


def discover_sources(data_dir: str | Path) -> RawSources:
    """List the raw files under `data_dir` per source, checking each present source is whole."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(data_dir, "raw data directory not found")
    sources: dict[str, tuple] = {}
    ignored: list[Path] = []
    for path in _entries(data_dir):
        if path.name == SAMPLE_MANIFEST:  # not data: says data/ is the bundled sample
            continue
        finder = SOURCE_FINDERS.get(path.name)
        if finder is not None and path.is_dir():
            sources[path.name] = finder(path, ignored)
            continue
        if path.is_dir():
            _reject_misnamed_source_dir(path)
        ignored.append(path)
    return RawSources(**sources, ignored=tuple(sorted(ignored)))
