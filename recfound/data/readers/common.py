"""Streaming building blocks shared by the raw readers, each failing with a located DataError.

Every function here reads its file lazily (line by line, CSV row by row, parquet batch by
batch), so a multi-gigabyte source is never held in memory. Every failure names the file,
the 1-based line (text formats) or data row (parquet) and the reason.

A reader does not stop at the first bad line: it collects every bad line of a file in a
`BadLines` (the low-level iterators report malformed lines there, `parse_rows` the records
whose fields are wrong), keeps reading, and raises one DataError at the end of the file that
gives the total and the first MAX_REPORTED_BAD_LINES, so one run shows how much of a file is
broken and where. A file that cannot be read on (missing, truncated gzip) ends the reading.

Lines (and CSV records) are read with a bounded readline, `build.max_line_bytes` at most
(`line_limit`), so a corrupt file without line breaks costs that much memory, not its size, and
fails naming the file, the line and its length. A file in a format documented as Latin-1 whose
bytes are valid UTF-8 with multibyte characters is read as UTF-8 (`text_encoding`), since a
re-encoded copy decoded as Latin-1 would turn every accented title into mojibake.
"""

from __future__ import annotations

import ast
import codecs
import csv
import gzip
import json
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import IO, Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from recfound.config import BuildConfig
from recfound.errors import DataError

T = TypeVar("T")

GZIP_MAGIC = b"\x1f\x8b"
# A UTF-8 byte-order mark as raw bytes: stripped from the start of a file whatever encoding it
# is read in (a Latin-1 decode would otherwise turn it into the text "ï»¿").
UTF8_BOM = b"\xef\xbb\xbf"
UTF8 = "utf-8"
LATIN1 = "iso-8859-1"
# Bytes scanned at a time when deciding a file's encoding (bounded memory for any file size).
SNIFF_CHUNK = 1 << 20
# The default of build.max_line_bytes: readers used outside a build (tests, notebooks) honour it.
DEFAULT_MAX_LINE_BYTES: int = BuildConfig.model_fields["max_line_bytes"].default
_max_line_bytes: ContextVar[int] = ContextVar("max_line_bytes", default=DEFAULT_MAX_LINE_BYTES)
# Rows per parquet batch: bounds memory while keeping per-batch overhead negligible.
PARQUET_BATCH_ROWS = 8192
# A price as the public files write it: optional minus, currency symbol, digits with optional
# thousands commas and decimals, optional trailing currency code ("$1,299.99", "16.25 gbp").
PRICE_TEXT = re.compile(
    r"^(?P<minus>-)?\s*[$£€]?\s*(?P<inner_minus>-)?(?P<amount>\d[\d,]*(?:\.\d+)?|\.\d+)"
    r"\s*(?:[A-Za-z]{3})?$"
)
# Amazon's star rating, in every release of Amazon Reviews.
AMAZON_STARS = (1.0, 5.0)
# Strings the public files use for "no price".
NO_PRICE_TEXTS = frozenset({"", "none"})
# Longest value repr quoted in an error message, so one huge field does not flood the terminal.
MAX_QUOTED_CHARS = 60
# Bad lines of one file listed in its error; the total is always given.
MAX_REPORTED_BAD_LINES = 10
# The note CSV readers add per row that holds a value under an empty header name.
NOTE_UNNAMED_VALUES = "values in unnamed columns (ignored)"
# The note a reader adds per line holding non-ASCII text of a Latin-1 format file that is UTF-8.
NOTE_READ_AS_UTF8 = "lines read as UTF-8, not the documented Latin-1 (a re-encoded copy)"

SECONDS = "seconds"
MILLISECONDS = "milliseconds"
UNITS_PER_SECOND = {SECONDS: 1, MILLISECONDS: 1000}
# Timestamps outside these dates are taken to be in the wrong unit or corrupt: the public
# sources span 1995-2023.
EARLIEST_DATE = date(1990, 1, 1)
LATEST_DATE = date(2040, 1, 1)
EPOCH = date(1970, 1, 1)
SECONDS_PER_DAY = 86_400
EARLIEST_SECONDS = (EARLIEST_DATE - EPOCH).days * SECONDS_PER_DAY
LATEST_SECONDS = (LATEST_DATE - EPOCH).days * SECONDS_PER_DAY


def quoted(value: object, limit: int = MAX_QUOTED_CHARS) -> str:
    """A short repr of a bad value for an error message (at most `limit` characters)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class BadLinesError(DataError):
    """Several bad lines in one file: the total and the first few, each with line and reason."""

    def __init__(self, path: Path, count: int, first: Sequence[DataError]) -> None:
        shown = f", the first {len(first)}" if count > len(first) else ""
        listed = "".join(f"\n  {err}" for err in first)
        super().__init__(path, f"{count} bad lines{shown}:{listed}")
        self.count = count
        self.first = tuple(first)


class BadLines:
    """The bad lines of one file, collected so a reader can keep going and report them all."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self.first: list[DataError] = []

    def add(self, err: DataError) -> None:
        """Count a bad line; keep its error if it is among the first reported."""
        self.count += 1
        if len(self.first) < MAX_REPORTED_BAD_LINES:
            self.first.append(err)

    def raise_any(self) -> None:
        """Raise what was collected: one error as it is, several as one BadLinesError."""
        if self.count == 1:
            raise self.first[0]
        if self.count > 1:
            raise BadLinesError(self.path, self.count, self.first)


def _bad_line(bad: BadLines | None, err: DataError) -> None:
    """Report a malformed line: to `bad` when the caller collects, else at once."""
    if bad is None:
        raise err
    bad.add(err)


def _holds_nothing(records: int, bad: BadLines | None) -> bool:
    """No record and no bad line: a file of blank lines. One whose every line was bad (too
    long, not decodable) has those lines reported instead of a misleading "only blank lines"."""
    return records == 0 and (bad is None or bad.count == 0)


def _until_unreadable(rows: Iterable[T], bad: BadLines) -> Iterator[T]:
    """`rows` until the file cannot be read on; that last error joins the bad lines."""
    try:
        yield from rows
    except DataError as err:
        bad.add(err)


def parse_rows(
    rows: Iterable[tuple[int, Mapping[str, Any]]], parse: Callable[[Fields], T], bad: BadLines
) -> Iterator[T]:
    """Yield `parse(fields)` for every row of one file, collecting every bad line in `bad`.

    `rows` are (line or row number, record) from one of the iterators below, given the same
    `bad` so malformed lines are collected too. After the last row, everything collected is
    raised together (BadLines.raise_any), so good records stream first and one error names
    every problem of the file.
    """
    for line_no, row in _until_unreadable(rows, bad):
        try:
            record = parse(Fields(bad.path, line_no, row))
        except DataError as err:
            bad.add(err)
            continue
        yield record
    bad.raise_any()


class LineTooLongError(DataError):
    """A line (or CSV record) longer than build.max_line_bytes: a bad line, skipped unread."""


@contextmanager
def line_limit(max_bytes: int) -> Iterator[None]:
    """Readers consumed in this block refuse lines longer than `max_bytes` (build.max_line_bytes).

    A context rather than a parameter of every reader: the bound is one setting for all of
    them, applied by the build and validate stages around everything they read. The previous
    bound is restored on leaving, whichever context leaves it.
    """
    previous = _max_line_bytes.get()
    _max_line_bytes.set(max_bytes)
    try:
        yield
    finally:
        _max_line_bytes.set(previous)


def max_line_bytes() -> int:
    """The line bound in force (`line_limit`, else the default of build.max_line_bytes)."""
    return _max_line_bytes.get()


def _too_long(path: Path, line_no: int, length: int, limit: int) -> LineTooLongError:
    reason = (
        f"line is {length:,} bytes long, longer than {limit:,} bytes (build.max_line_bytes); "
        "a file without line breaks is corrupt, a genuine long line needs the setting raised"
    )
    return LineTooLongError(path, reason, line=line_no)


def _open_binary(path: Path) -> IO[bytes]:
    """Open `path` for binary reading, transparently gunzipping when it starts with gzip magic."""
    try:
        with path.open("rb") as probe:
            magic = probe.read(len(GZIP_MAGIC))
    except FileNotFoundError as err:
        raise DataError(path, "file not found") from err
    except IsADirectoryError as err:
        raise DataError(path, "expected a file, found a directory") from err
    return gzip.open(path, "rb") if magic == GZIP_MAGIC else path.open("rb")


def _readline(stream: IO[bytes], size: int, path: Path, line_no: int) -> bytes:
    """At most `size` bytes of the current line; a read failure names the line it stopped at."""
    try:
        return stream.readline(size)
    except (EOFError, OSError, zlib.error) as err:
        compressed = isinstance(stream, gzip.GzipFile)
        problem = "gzip stream is truncated or corrupt" if compressed else "read failed"
        raise DataError(path, f"{problem} ({err})", line=line_no) from err


def _rest_of_line(stream: IO[bytes], chunk: int, path: Path, line_no: int) -> int:
    """Skip the rest of an overlong line in chunks of `chunk` bytes; its length without the
    line break. Memory stays at one chunk however long the line (2 GB without a break)."""
    skipped = 0
    while piece := _readline(stream, chunk, path, line_no):
        if piece.endswith(b"\n"):
            return skipped + len(piece) - 1
        skipped += len(piece)
    return skipped


def text_encoding(path: str | Path, declared: str) -> str:
    """The encoding to read `path` in: `declared`, except for a file of a format documented
    as Latin-1 whose bytes are valid UTF-8 holding multibyte characters: UTF-8.

    Such a file is a re-encoded copy (as redistributions of MovieLens often are); read as
    Latin-1 every accented character would become two (`CafÃ©`) and nothing would fail. Real
    Latin-1 text with accents is almost never valid UTF-8. The file is scanned whole in
    chunks (bounded memory), after a leading byte-order mark; an all-ASCII file is the same in
    both encodings and keeps `declared`. A file that cannot be read keeps `declared`: reading
    it then reports the problem with its line.
    """
    if codecs.lookup(declared).name != codecs.lookup(LATIN1).name:
        return declared
    decoder = codecs.getincrementaldecoder(UTF8)()
    multibyte = False
    try:
        with _open_binary(Path(path)) as stream:
            chunk = stream.read(SNIFF_CHUNK)
            chunk = chunk.removeprefix(UTF8_BOM)
            while chunk:
                multibyte = multibyte or not chunk.isascii()
                if multibyte:
                    decoder.decode(chunk)
                chunk = stream.read(SNIFF_CHUNK)
            decoder.decode(b"", final=True)
    except (UnicodeDecodeError, DataError, EOFError, OSError, zlib.error):
        return declared  # not UTF-8, or unreadable: the read itself reports what is wrong
    return UTF8 if multibyte else declared


def iter_lines(
    path: str | Path, encoding: str = UTF8, bad: BadLines | None = None
) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line with its terminator) from a plain or gzip text file.

    A leading UTF-8 byte-order mark is dropped whatever `encoding` is. A line whose bytes are
    not valid in `encoding`, or longer than build.max_line_bytes (`line_limit`; its length is
    measured by skipping it in bounded chunks, never holding it), is a bad line: reported to
    `bad` and skipped, or raised at once when `bad` is None. A missing or empty file and a
    truncated or corrupt gzip stream (naming the line at which reading stopped) raise
    DataError.
    """
    path = Path(path)
    limit = max_line_bytes()
    line_no = 0
    with _open_binary(path) as stream:
        while raw := _readline(stream, limit + 1, path, line_no + 1):
            line_no += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                length = len(raw) + _rest_of_line(stream, limit, path, line_no)
                _bad_line(bad, _too_long(path, line_no, length, limit))
                continue
            if line_no == 1 and raw.startswith(UTF8_BOM):
                raw = raw[len(UTF8_BOM) :]  # an encoding artefact, not data
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as err:
                reason = (
                    f"not valid {encoding.upper()}: byte 0x{raw[err.start]:02x} "
                    f"at column {err.start + 1}"
                )
                _bad_line(bad, DataError(path, reason, line=line_no))
                continue
            yield line_no, text
    if line_no == 0:
        raise DataError(path, "file is empty")


def _parse_object(text: str, python_literals: bool) -> Any:
    """A line as JSON; with `python_literals`, a Python literal when it is not JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        if not python_literals:
            raise ValueError(f"malformed JSON: {err.msg} at column {err.colno}") from err
        reason = f"neither JSON ({err.msg} at column {err.colno}) nor a Python literal"
    try:
        # Only literals (no names, calls or operators): never evaluates code.
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as err:
        raise ValueError(reason) from err


def iter_json_objects(
    path: str | Path, bad: BadLines | None = None, python_literals: bool = False
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a UTF-8 JSON Lines file.

    A line that is not a JSON object is a bad line (reported to `bad`, or raised at once when
    `bad` is None). With `python_literals`, a line that is not JSON may be a Python dict
    literal (single quotes), as the Amazon Reviews 2014 metadata writes; it is read with
    ast.literal_eval, which accepts literals only.
    """
    path = Path(path)
    non_blank = 0
    for line_no, text in iter_lines(path, bad=bad):
        if not text.strip():
            continue
        non_blank += 1
        try:
            obj = _parse_object(text, python_literals)
        except ValueError as err:
            _bad_line(bad, DataError(path, str(err), line=line_no))
            continue
        if not isinstance(obj, dict):
            reason = f"expected a JSON object, got {type(obj).__name__}"
            _bad_line(bad, DataError(path, reason, line=line_no))
            continue
        yield line_no, obj
    if _holds_nothing(non_blank, bad):
        raise DataError(path, "file holds no records (only blank lines)")


def iter_delimited(
    path: str | Path,
    separator: str,
    n_fields: int,
    encoding: str,
    bad: BadLines | None = None,
    notes: Counter[str] | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for each non-blank line split on `separator` (no quoting).

    For MovieLens-style files: a line that does not hold exactly `n_fields` fields is a bad
    line (reported to `bad`, or raised at once when `bad` is None). `encoding` is the one the
    format documents; a Latin-1 file that is UTF-8 is read as UTF-8 (`text_encoding`), each
    line holding non-ASCII text then counted in `notes` under NOTE_READ_AS_UTF8.
    """
    path = Path(path)
    actual = text_encoding(path, encoding)
    non_blank = 0
    for line_no, text in iter_lines(path, encoding=actual, bad=bad):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        non_blank += 1
        if notes is not None and actual != encoding and not text.isascii():
            notes[NOTE_READ_AS_UTF8] += 1
        fields = text.split(separator)
        if len(fields) != n_fields:
            reason = f"expected {n_fields} fields separated by {separator!r}, found {len(fields)}"
            _bad_line(bad, DataError(path, reason, line=line_no))
            continue
        yield line_no, fields
    if _holds_nothing(non_blank, bad):
        raise DataError(path, "file holds no records (only blank lines)")


class _RecordLines:
    """Feeds csv.reader text lines, remembering the file line number each record starts on.

    csv.reader's own count drifts from the file's lines once a bad line has been skipped. A
    record may span lines (a quoted field holding line breaks, or an unclosed quote running
    on): one longer than `limit` characters is refused here, so a record is bounded like a
    line (each line is bounded in bytes by iter_lines, each record here in characters).
    """

    def __init__(self, path: Path, lines: Iterator[tuple[int, str]], limit: int) -> None:
        self._path = path
        self._lines = lines
        self._limit = limit
        self._new_record = True
        self._chars = 0
        self.first_line = 0

    def __iter__(self) -> _RecordLines:
        return self

    def __next__(self) -> str:
        line_no, text = next(self._lines)
        if self._new_record:
            self.first_line, self._new_record, self._chars = line_no, False, 0
        self._chars += len(text)
        if self._chars > self._limit:
            self._new_record = True  # the csv module starts afresh on its next record too
            reason = (
                f"CSV record runs on to line {line_no} and past {self._limit:,} characters "
                "(build.max_line_bytes): a quoted field left open?"
            )
            raise LineTooLongError(self._path, reason, line=self.first_line)
        return text

    def next_record(self) -> None:
        """The next line read starts a new record."""
        self._new_record = True


def _csv_header(
    path: Path, reader: Iterator[list[str]], lines: _RecordLines, required: Sequence[str]
) -> list[str]:
    """The header line; it must be line 1, name every `required` column, and no name twice."""
    try:
        header = next(reader)
    except csv.Error as err:
        raise DataError(path, f"malformed CSV header: {err}", line=1) from err
    except StopIteration:
        raise DataError(path, "file holds no header line", line=1) from None
    if lines.first_line != 1:  # line 1 was a bad line (too long, not UTF-8), reported already
        raise DataError(path, "the header line is unreadable, so no row can be read", line=1)
    missing = [name for name in required if name not in header]
    if missing:
        raise DataError(
            path,
            f"header lacks column(s) {', '.join(missing)}; found {quoted(header, 300)}",
            line=1,
        )
    named = [name for name in header if name.strip()]
    twice = sorted({name for name in named if named.count(name) > 1})
    if twice:
        raise DataError(path, f"header names column(s) {', '.join(twice)} twice", line=1)
    return header


def _allow_csv_fields(limit: int) -> None:
    """Let the csv module take any field a bounded record can hold.

    Its own bound (131,072 characters per field by default) would refuse a long field that
    build.max_line_bytes allows, under a message naming another limit; records are bounded
    by _RecordLines instead. The setting is process-wide; only these readers parse CSV here.
    """
    csv.field_size_limit(limit)


def iter_csv_rows(
    path: str | Path,
    required_columns: Sequence[str],
    bad: BadLines | None = None,
    notes: Counter[str] | None = None,
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) for each data row of a UTF-8 CSV file with a header line.

    The header must name every column in `required_columns`. Columns whose header name is
    empty are left out of the rows; each row holding a value in one is counted in `notes`
    under NOTE_UNNAMED_VALUES. A row with another number of fields than the header, that
    the csv module cannot parse, or longer than build.max_line_bytes, is a bad line (reported
    to `bad`, or raised at once when `bad` is None). The line number is the row's first
    physical line (header = line 1).
    """
    path = Path(path)
    limit = max_line_bytes()
    _allow_csv_fields(limit)
    lines = _RecordLines(path, iter_lines(path, bad=bad), limit)
    reader = csv.reader(lines)
    header = _csv_header(path, reader, lines, required_columns)
    unnamed = [index for index, name in enumerate(header) if not name.strip()]
    rows = 0
    while True:
        lines.next_record()
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            _bad_line(bad, DataError(path, f"malformed CSV: {err}", line=lines.first_line))
            continue
        except LineTooLongError as err:
            _bad_line(bad, err)
            continue
        if not fields:
            continue
        rows += 1
        if len(fields) != len(header):
            reason = f"row has {len(fields)} columns, the header has {len(header)}"
            _bad_line(bad, DataError(path, reason, line=lines.first_line))
            continue
        if notes is not None and any(fields[index].strip() for index in unnamed):
            notes[NOTE_UNNAMED_VALUES] += 1
        row = {name: value for name, value in zip(header, fields, strict=True) if name.strip()}
        yield lines.first_line, row
    if _holds_nothing(rows, bad):
        raise DataError(path, "file holds a header but no data rows")


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


ARROW_KINDS = {"int": pa.types.is_integer, "str": _is_text}


def iter_parquet_rows(
    path: str | Path, columns: Mapping[str, str]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row number, row) from a parquet file, reading only `columns`, batch by batch.

    `columns` maps each column name to the kind it must have ("int" or "str"; a column that
    is entirely null also passes). A missing column or one of another type is an error before
    any row is read. Rows count from 1.
    """
    path = Path(path)
    try:
        parquet = pq.ParquetFile(path)
    except FileNotFoundError as err:
        raise DataError(path, "file not found") from err
    except (pa.ArrowException, OSError) as err:
        raise DataError(path, f"not a readable parquet file ({err})") from err
    schema = parquet.schema_arrow
    missing = [name for name in columns if name not in schema.names]
    if missing:
        raise DataError(
            path,
            f"missing column(s) {', '.join(missing)}; found {quoted(schema.names, 300)}",
            line=None,
        )
    for name, kind in columns.items():
        actual = schema.field(name).type
        # An all-null column has arrow type null; its rows are then checked one by one.
        if not (pa.types.is_null(actual) or ARROW_KINDS[kind](actual)):
            raise DataError(path, f"column {name} has type {actual}, expected {kind}")
    if parquet.metadata.num_rows == 0:
        raise DataError(path, "file holds no rows")
    row_no = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=list(columns)):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


@dataclass(frozen=True)
class Clock:
    """How a format writes time: its unit (SECONDS or MILLISECONDS), and its name for messages."""

    source: str
    unit: str

    def problem(self, value: int) -> str | None:
        """Why `value` is no plausible timestamp in this unit, or None when it is one."""
        if self._plausible(value, self.unit):
            return None
        writes = f"{self.source} writes {self.unit}"
        for other in UNITS_PER_SECOND.keys() - {self.unit}:
            if self._plausible(value, other):
                return f"timestamp {quoted(value)} looks like {other}; {writes}"
        return (
            f"timestamp {quoted(value)} is outside {EARLIEST_DATE}..{LATEST_DATE} "
            f"in {self.unit}, the unit {self.source} writes"
        )

    @staticmethod
    def _plausible(value: int, unit: str) -> bool:
        scale = UNITS_PER_SECOND[unit]
        return EARLIEST_SECONDS * scale <= value < LATEST_SECONDS * scale


def is_price_text(text: str) -> bool:
    """`text` is a price as the public files write it ("$12.99", "None", "", "16.25 gbp")."""
    stripped = text.strip()
    return stripped.lower() in NO_PRICE_TEXTS or PRICE_TEXT.match(stripped) is not None


class Fields:
    """Typed, located access to one parsed record (a JSON object or a CSV/parquet row).

    Required fields must be present and non-null; a wrong type is an error naming the field,
    its value, the file and the line. Optional fields that are absent or null take a default.
    """

    def __init__(self, path: Path, line: int, record: Mapping[str, Any], prefix: str = "") -> None:
        self.path = path
        self.line = line
        self.record = record
        self.prefix = prefix  # names a nested object in messages, e.g. "answers[2]."

    def nested(self, name: str, record: Mapping[str, Any]) -> Fields:
        """Fields of an object nested in this record, named `name` in error messages."""
        return Fields(self.path, self.line, record, prefix=f"{self.prefix}{name}.")

    def error(self, reason: str) -> DataError:
        """A DataError located at this record."""
        return DataError(self.path, reason, line=self.line)

    def raw(self, name: str, required: bool = True) -> Any:
        """The value as parsed; a required one that is absent or null is an error."""
        value = self.record.get(name)
        if value is None and required:
            state = "null" if name in self.record else "missing"
            raise self.error(f"required field '{self.prefix}{name}' is {state}")
        return value

    def wrong(self, name: str, expected: str, value: object) -> DataError:
        """The error for field `name` holding `value`, which is not `expected`."""
        return self.error(
            f"field '{self.prefix}{name}' must be {expected}, "
            f"got {type(value).__name__} {quoted(value)}"
        )

    def text(self, name: str) -> str:
        """A required string (may be empty)."""
        value = self.raw(name, required=True)
        if not isinstance(value, str):
            raise self.wrong(name, "a string", value)
        return value

    def ident(self, name: str) -> str:
        """A required, non-blank identifier; integer ids are written as decimal text."""
        value = self.raw(name, required=True)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise self.wrong(name, "a string id", value)
        if not value.strip():
            raise self.error(f"required field '{self.prefix}{name}' is blank")
        return value

    def optional_text(self, name: str) -> str:
        """An optional string; absent or null gives ""."""
        value = self.raw(name, required=False)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.wrong(name, "a string", value)
        return value

    def integer(self, name: str) -> int:
        """A required integer (JSON integer, not bool)."""
        value = self.raw(name, required=True)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.wrong(name, "an integer", value)
        return value

    def optional_integer(self, name: str) -> int | None:
        """An optional integer; absent or null gives None."""
        return None if self.raw(name, required=False) is None else self.integer(name)

    def number(self, name: str) -> float:
        """A required number (JSON integer or float, not bool)."""
        value = self.raw(name, required=True)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.wrong(name, "a number", value)
        if not math.isfinite(value):
            raise self.wrong(name, "a finite number", value)
        return float(value)

    def optional_number(self, name: str) -> float | None:
        """An optional number; absent or null gives None."""
        return None if self.raw(name, required=False) is None else self.number(name)

    def flag(self, name: str, default: bool = False) -> bool:
        """An optional JSON boolean; absent or null gives `default`."""
        value = self.raw(name, required=False)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.wrong(name, "true or false", value)
        return value

    def text_list(self, name: str, required: bool = False) -> tuple[str, ...]:
        """A list of strings; when optional, absent or null gives ()."""
        value = self.raw(name, required=required)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self.wrong(name, "a list of strings", value)
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.wrong(f"{name}[{index}]", "a string", item)
        return tuple(value)

    def text_dict(self, name: str) -> dict[str, str]:
        """An optional object as str -> str: string values as they are, any other value as
        compact JSON text; absent or null gives {}."""
        value = self.raw(name, required=False)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(
                f"field '{self.prefix}{name}' must be an object, got {type(value).__name__}"
            )
        return {
            str(key): item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)
            for key, item in value.items()
        }

    def integer_pair(self, name: str) -> tuple[int, int] | None:
        """An optional list of exactly 2 integers (e.g. [helpful votes, total votes])."""
        value = self.raw(name, required=False)
        if value is None:
            return None
        if not (
            isinstance(value, list)
            and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise self.wrong(name, "a list of 2 integers", value)
        return (value[0], value[1])

    def parsed_int(self, name: str) -> int:
        """A required integer written as text (CSV and MovieLens fields)."""
        value = self.text(name).strip()
        try:
            return int(value)
        except ValueError as err:
            raise self.wrong(name, "an integer", value) from err

    def parsed_float(self, name: str) -> float:
        """A required number written as text (CSV and MovieLens fields)."""
        value = self.text(name).strip()
        try:
            number = float(value)
        except ValueError as err:
            raise self.wrong(name, "a number", value) from err
        if not math.isfinite(number):
            raise self.wrong(name, "a finite number", value)
        return number

    def within(self, name: str, value: float, low: float, high: float) -> float:
        """`value` of field `name`, which must lie in [low, high]: out of range is an error."""
        if not low <= value <= high:
            raise self.error(
                f"field '{self.prefix}{name}' must be from {low:g} to {high:g}, got {quoted(value)}"
            )
        return value

    def timestamp(self, name: str, clock: Clock) -> int:
        """A required integer timestamp on a plausible date in `clock`'s unit."""
        return self._plausible_time(name, self.integer(name), clock)

    def parsed_timestamp(self, name: str, clock: Clock) -> int:
        """A required timestamp written as text, on a plausible date in `clock`'s unit."""
        return self._plausible_time(name, self.parsed_int(name), clock)

    def _plausible_time(self, name: str, value: int, clock: Clock) -> int:
        problem = clock.problem(value)
        if problem is not None:
            raise self.error(f"field '{self.prefix}{name}': {problem}")
        return value

    def price(self, name: str) -> float | None:
        """An optional price: a number, or text such as "$1,299.99", "16.25 gbp", "None", "".

        Absent, null, empty and "None" give None; other text is an error, and so is a
        negative price, written as a number or as text.
        """
        value = self.raw(name, required=False)
        if value is None:
            return None
        if not isinstance(value, str):
            return self._not_negative(name, self.number(name))
        text = value.strip()
        if text.lower() in NO_PRICE_TEXTS:
            return None
        match = PRICE_TEXT.match(text)
        if match is None:
            raise self.wrong(name, "a price", value)
        amount = float(match.group("amount").replace(",", ""))
        negative = bool(match.group("minus") or match.group("inner_minus"))
        return self._not_negative(name, -amount if negative else amount)

    def _not_negative(self, name: str, price: float) -> float:
        if price < 0:
            raise self.error(f"field '{self.prefix}{name}' must not be negative, got {price:g}")
        return price
