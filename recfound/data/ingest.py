"""The ingest report: per source and file, rows read, kept, and dropped by reason.

Nothing the build leaves out goes uncounted. Data-quality drops (an interaction whose item
has no metadata, exact and conflicting duplicates, users under `build.min_interactions`, a
MovieLens rating whose user the set's users file lacks) are checked against
`build.max_drop_share`: a file that loses a larger share of its rows to one reason fails the
build with the file, the reason, the count and the first examples. Rows left out by a setting
(another ESCI locale) are counted as filtered, without a limit. Notes count what a reader
tolerated (values in unnamed CSV columns, a Latin-1 file read as UTF-8) and what the build
kept but a person should know (a title a source lists again). Releases of one source read side
by side in separate id spaces are recorded too (`keep_apart`), so the summary says so. Quoted
examples are cut short, so one huge record cannot bloat the report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recfound.errors import RecFoundError

# Reasons (the keys of build.max_drop_share name those checked).
NO_METADATA = "no_metadata"
DUPLICATE = "duplicate"
CONFLICTING_DUPLICATE = "conflicting_duplicate"
SHORT_USER = "short_user"
DUPLICATE_ITEM = "duplicate_item"
UNKNOWN_USER = "unknown_user"
REASONS: dict[str, str] = {
    NO_METADATA: "interaction whose item has no metadata (left out of U2I/SR/UP/I2I; an "
    "Amazon review still feeds SA, which needs only its text)",
    DUPLICATE: "exact duplicate interaction (one kept)",
    CONFLICTING_DUPLICATE: "conflicting duplicate: same user, item and time, other rating "
    "(the one listed last is kept)",
    SHORT_USER: "user under build.min_interactions (left out of U2I/SR/UP; still counts "
    "for I2I co-purchases)",
    DUPLICATE_ITEM: "item listed again (the first listing is kept)",
    UNKNOWN_USER: "MovieLens rating whose user the set's users file (u.user, users.dat) does "
    "not list",
}
# The note on a movies file per title (title and year) its source has listed already, under
# another id or in another release: kept as its own item, but said.
REPEATED_TITLE = "title listed already by this source (kept as its own item)"
EXAMPLES_KEPT = 5  # per file and reason
EXAMPLE_CHARS = 200  # a quoted example is cut to this length


class IngestError(RecFoundError):
    """A file lost more of its rows to one reason than build.max_drop_share allows."""


def _cut(text: str) -> str:
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"


def _listed(names: Sequence[str]) -> str:
    """Names joined for a sentence: a; a and b; a, b and c."""
    return " and ".join(filter(None, (", ".join(names[:-1]), names[-1])))


@dataclass
class FileCounts:
    """What the build did with one raw file's rows."""

    source: str
    path: str
    read: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def kept(self) -> int:
        return self.read - sum(self.dropped.values()) - sum(self.filtered.values())

    def drop(self, reason: str, example: str, n: int = 1, filtered: bool = False) -> None:
        (self.filtered if filtered else self.dropped)[reason] += n
        shown = self.examples.setdefault(reason, [])
        if len(shown) < EXAMPLES_KEPT:
            shown.append(_cut(example))

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "file": self.path,
            "read": self.read,
            "kept": self.kept,
            "dropped": dict(self.dropped),
            "filtered": dict(self.filtered),
            "notes": dict(self.notes),
            "examples": self.examples,
        }


class IngestReport:
    """Counts per raw file, in the order the build reads them."""

    def __init__(self) -> None:
        self.files: dict[str, FileCounts] = {}
        self.ignored: list[str] = []
        self.kept_apart: dict[str, list[str]] = {}

    def file(self, source: str, path: str | Path) -> FileCounts:
        """The counts of `path` (created on first use)."""
        key = str(path)
        if key not in self.files:
            self.files[key] = FileCounts(source, key)
        return self.files[key]

    def ignore(self, paths: Iterable[str | Path]) -> None:
        """Files in the data folder that no source reads (listed, never silently skipped)."""
        self.ignored.extend(str(p) for p in paths)

    def keep_apart(self, source: str, releases: Sequence[str]) -> None:
        """Record that `releases` of `source` are read side by side, each in its own id space
        (so "1" of one is not the user or movie "1" of another), for the summary to say."""
        self.kept_apart[source] = list(releases)

    def noted(self, source: str, note: str) -> int:
        """How many times `note` was counted over the files of `source`."""
        return sum(c.notes[note] for c in self.files.values() if c.source == source)

    def remarks(self) -> list[str]:
        """Sentences for the build's summary: releases kept apart, titles a source repeats."""
        out = [
            f"{source}: releases {_listed(releases)} are kept apart (separate id spaces: an id "
            "of one is never the same user or item in another)"
            for source, releases in self.kept_apart.items()
        ]
        for source in dict.fromkeys(c.source for c in self.files.values()):
            if repeated := self.noted(source, REPEATED_TITLE):
                out.append(
                    f"{source}: {repeated:,} catalogue titles (title and year) listed again under "
                    "another id or release; each stays its own item (see the notes per file)"
                )
        return out

    def check(self, limits: Mapping[str, float]) -> None:
        """Raise IngestError for the first file whose share dropped to one reason exceeds
        `limits[reason]`; reasons without a limit are not checked."""
        for counts in self.files.values():
            for reason, n in counts.dropped.items():
                limit = limits.get(reason)
                if limit is None or not counts.read or n / counts.read <= limit:
                    continue
                examples = "; ".join(counts.examples.get(reason, []))
                raise IngestError(
                    f"{counts.path}: {n:,} of {counts.read:,} rows ({n / counts.read:.1%}) "
                    f"dropped: {REASONS.get(reason, reason)}; more than "
                    f"build.max_drop_share.{reason} = {limit:.1%}. First examples: {examples}"
                )

    def to_json(self) -> dict[str, Any]:
        return {
            "reasons": REASONS,
            "files": [c.to_json() for c in self.files.values()],
            "ignored": self.ignored,
            "kept_apart": self.kept_apart,
            "remarks": self.remarks(),
        }

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(file, read, kept, dropped by reason, filtered/notes) per file, for a printed table."""
        out = []
        for c in self.files.values():
            dropped = ", ".join(f"{r} {n:,}" for r, n in c.dropped.items() if n) or "-"
            other = ", ".join(f"{r} {n:,}" for r, n in (*c.filtered.items(), *c.notes.items()))
            out.append((c.path, f"{c.read:,}", f"{c.kept:,}", dropped, other or "-"))
        return out
