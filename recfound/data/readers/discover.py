"""Find the raw source files under data/ in the documented layout (docs/data-formats.md).

A source whose directory is absent is simply not there (empty tuple): the builder decides
which sources it needs. A source directory that exists but lacks a required file is an
error naming the missing file, so a half-copied download never passes silently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recfound.errors import DataError

AMAZON_REVIEWS_DIR = "amazon_reviews"
ESCI_DIR = "esci"
AMAZONQA_DIR = "amazonqa"
MOVIELENS_DIR = "movielens"
AMAZON_GOOGLE_DIR = "amazon_google"
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
META_PREFIX = "meta_"
ESCI_EXAMPLES = "shopping_queries_dataset_examples.parquet"
ESCI_PRODUCTS = "shopping_queries_dataset_products.parquet"
MOVIELENS_VARIANTS = {
    "ml-100k": ("u.data", "u.item", "u.user"),
    "ml-1m": ("ratings.dat", "movies.dat", "users.dat"),
}
AMAZON_GOOGLE_FILES = ("tableA.csv", "tableB.csv", "train.csv", "valid.csv", "test.csv")


@dataclass(frozen=True)
class ReviewCategory:
    """One Amazon Reviews 2023 category: its review file and its item-metadata file."""

    category: str
    reviews: Path
    meta: Path


@dataclass(frozen=True)
class EsciFiles:
    """The ESCI examples and products parquet files."""

    examples: Path
    products: Path


@dataclass(frozen=True)
class MovieLensFiles:
    """One MovieLens variant ("ml-100k" or "ml-1m") and its three files."""

    variant: str
    ratings: Path
    movies: Path
    users: Path


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
    """Every raw file found, per source; an empty tuple means the source is absent."""

    amazon_reviews: tuple[ReviewCategory, ...] = ()
    esci: tuple[EsciFiles, ...] = ()
    amazonqa: tuple[Path, ...] = ()
    movielens: tuple[MovieLensFiles, ...] = ()
    amazon_google: tuple[AmazonGoogleFiles, ...] = ()

    @property
    def present(self) -> tuple[str, ...]:
        """Names of the sources that have files, in declaration order."""
        return tuple(
            name
            for name in ("amazon_reviews", "esci", "amazonqa", "movielens", "amazon_google")
            if getattr(self, name)
        )


def _strip_jsonl(name: str) -> str | None:
    """The stem of a `.jsonl` / `.jsonl.gz` file name, or None for any other file."""
    for suffix in sorted(JSONL_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix) and not name.startswith("."):
            return name[: -len(suffix)]
    return None


def _jsonl_files(directory: Path) -> dict[str, Path]:
    """Stem -> file for the JSON Lines files of `directory`; a stem in both forms is an error."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        stem = _strip_jsonl(path.name)
        if stem is None or not path.is_file():
            continue
        if stem in found:
            raise DataError(path, f"both {found[stem].name} and {path.name} exist; keep one")
        found[stem] = path
    return found


def _require(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise DataError(path, f"required file is missing from {directory}")
    return path


def _amazon_reviews(directory: Path) -> tuple[ReviewCategory, ...]:
    files = _jsonl_files(directory)
    reviews = {stem: p for stem, p in files.items() if not stem.startswith(META_PREFIX)}
    metas = {
        stem.removeprefix(META_PREFIX): p
        for stem, p in files.items()
        if stem.startswith(META_PREFIX)
    }
    if not files:
        raise DataError(directory, "no <Category>.jsonl[.gz] review file found")
    without_reviews = sorted(metas.keys() - reviews.keys())
    if without_reviews:
        category = without_reviews[0]
        raise DataError(
            directory / f"{category}.jsonl",
            f"required file is missing: the reviews belonging to {metas[category].name}",
        )
    without_meta = sorted(reviews.keys() - metas.keys())
    if without_meta:
        category = without_meta[0]
        raise DataError(
            directory / f"{META_PREFIX}{category}.jsonl",
            f"required file is missing: the item metadata for {reviews[category].name}",
        )
    return tuple(
        ReviewCategory(category, reviews[category], metas[category]) for category in sorted(reviews)
    )


def _amazonqa(directory: Path) -> tuple[Path, ...]:
    files = _jsonl_files(directory)
    if not files:
        raise DataError(directory, "no AmazonQA file (*.jsonl or *.jsonl.gz) found")
    return tuple(files[stem] for stem in sorted(files))


def _movielens(directory: Path) -> tuple[MovieLensFiles, ...]:
    found = []
    for variant, names in MOVIELENS_VARIANTS.items():
        variant_dir = directory / variant
        if variant_dir.is_dir():
            ratings, movies, users = (_require(variant_dir, name) for name in names)
            found.append(MovieLensFiles(variant, ratings, movies, users))
    if not found:
        expected = " or ".join(f"{directory / v}/" for v in MOVIELENS_VARIANTS)
        raise DataError(directory, f"no MovieLens variant found; expected {expected}")
    return tuple(found)


def discover_sources(data_dir: str | Path) -> RawSources:
    """List the raw files under `data_dir` per source, checking each present source is whole."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(data_dir, "raw data directory not found")

    def present(name: str) -> Path | None:
        directory = data_dir / name
        return directory if directory.is_dir() else None

    sources: dict[str, tuple] = {}
    if directory := present(AMAZON_REVIEWS_DIR):
        sources["amazon_reviews"] = _amazon_reviews(directory)
    if directory := present(ESCI_DIR):
        sources["esci"] = (
            EsciFiles(_require(directory, ESCI_EXAMPLES), _require(directory, ESCI_PRODUCTS)),
        )
    if directory := present(AMAZONQA_DIR):
        sources["amazonqa"] = _amazonqa(directory)
    if directory := present(MOVIELENS_DIR):
        sources["movielens"] = _movielens(directory)
    if directory := present(AMAZON_GOOGLE_DIR):
        sources["amazon_google"] = (
            AmazonGoogleFiles(*(_require(directory, name) for name in AMAZON_GOOGLE_FILES)),
        )
    return RawSources(**sources)
