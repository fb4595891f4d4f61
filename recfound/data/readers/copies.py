"""Refuse a release read twice: two files of one source with the same bytes.

The same MovieLens set in two folders (`ml-100k` and `ml-100k-copy`) passes every other check,
and since each set's ids are scoped by its folder, every user and movie would be counted twice
under two ids: catalogue items doubled, hard negatives that are the positive's identical twin.
The same holds for an Amazon category or an AmazonQA file saved under a second name. Files are
compared by size first and hashed (sha256) only when sizes coincide, so the check costs nothing
on distinct data. A source with a single set of files (ESCI, Amazon-Google) has nothing to
compare; a pair file of Amazon-Google copied over another is reported by the PM task.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from recfound.data.readers.discover import RawSources
from recfound.errors import DataError

HASH = "sha256"
SHOWN_HASH_CHARS = 12  # of the digest, in the message


def files_per_source(sources: RawSources) -> dict[str, list[Path]]:
    """Source name -> every file the build reads of it, for the sources that can hold copies."""
    found: dict[str, list[Path]] = defaultdict(list)
    for name, files in sources.amazon_categories():
        found[name].extend((files.reviews, files.meta))
    found["amazonqa"].extend(sources.amazonqa)
    for files in sources.movielens:
        read = (files.ratings, files.movies, files.users, files.tags)
        found["movielens"].extend(path for path in read if path is not None)
    return {name: paths for name, paths in found.items() if len(paths) > 1}


def file_digest(path: Path) -> str:
    """The sha256 of the file at `path`, read in chunks (hashlib.file_digest)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, HASH).hexdigest()


def _first_copy(paths: Iterable[Path]) -> tuple[Path, Path, str] | None:
    """(earlier file, later file, digest) of the first two `paths` with the same bytes."""
    by_size: dict[int, list[Path]] = defaultdict(list)
    for path in paths:
        by_size[path.stat().st_size].append(path)
    for same_size in by_size.values():
        seen: dict[str, Path] = {}
        for path in same_size if len(same_size) > 1 else ():
            digest = file_digest(path)
            if digest in seen:
                return seen[digest], path, digest
            seen[digest] = path
    return None


def refuse_copies(sources: RawSources) -> None:
    """Raise DataError, one line naming both paths, when a source holds one file twice."""
    for paths in files_per_source(sources).values():
        if (copy := _first_copy(paths)) is not None:
            original, again, digest = copy
            raise DataError(
                again,
                f"the same bytes as {original} ({HASH} {digest[:SHOWN_HASH_CHARS]}…): one "
                "release read twice would count each of its users and items twice, under two "
                "ids; keep one copy",
            )
