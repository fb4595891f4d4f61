"""Streaming building blocks shared by the raw readers, each failing with a located DataError.

Every function here reads its file lazily (line by line, CSV row by row, parquet batch by
batch), so a multi-gigabyte source is never held in memory. Every failure names the file,
the 1-based line (text formats) or data row (parquet) and the reason.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import re
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from recfound.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"
UTF8 = "utf-8"
# Rows per parquet batch: bounds memory while keeping per-batch overhead negligible.
PARQUET_BATCH_ROWS = 8192
# A price as the public files write it: optional currency symbol, digits with optional
# thousands commas and decimals, optional trailing currency code ("$1,299.99", "16.25 gbp").
PRICE_TEXT = re.compile(r"^[$£€]?\s*(\d[\d,]*(?:\.\d+)?|\.\d+)\s*(?:[A-Za-z]{3})?$")
# Strings the public files use for "no price".
NO_PRICE_TEXTS = frozenset({"", "none"})
# Longest value repr quoted in an error message, so one huge field does not flood the terminal.
MAX_QUOTED_CHARS = 60


def quoted(value: object) -> str:
    """A short repr of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED_CHARS else text[: MAX_QUOTED_CHARS - 3] + "..."


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


def iter_lines(path: str | Path, encoding: str = UTF8) -> Iterator[tuple[int, str]]:
    """Yield (line number, decoded line with its terminator) from a plain or gzip text file.

    Raises DataError for a missing or empty file, bytes that are not valid in `encoding`,
    and a truncated or corrupt gzip stream (naming the line at which reading stopped).
    """
    path = Path(path)
    line_no = 0
    with _open_binary(path) as stream:
        compressed = isinstance(stream, gzip.GzipFile)
        while True:
            try:
                raw = stream.readline()
            except (EOFError, OSError, zlib.error) as err:
                problem = "gzip stream is truncated or corrupt" if compressed else "read failed"
                raise DataError(path, f"{problem} ({err})", line=line_no + 1) from err
            if not raw:
                break
            line_no += 1
            try:
                text = raw.decode(encoding)
            except UnicodeDecodeError as err:
                raise DataError(
                    path,
                    f"not valid {encoding.upper()}: byte 0x{raw[err.start]:02x} "
                    f"at column {err.start + 1}",
                    line=line_no,
                ) from err
            if line_no == 1 and text.startswith("\ufeff"):
                text = text[1:]  # a UTF-8 byte-order mark is an encoding artefact, not data
            yield line_no, text
    if line_no == 0:
        raise DataError(path, "file is empty")


def iter_json_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line of a UTF-8 JSON Lines file."""
    path = Path(path)
    records = 0
    for line_no, text in iter_lines(path):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(
                path, f"malformed JSON: {err.msg} at column {err.colno}", line=line_no
            ) from err
        if not isinstance(obj, dict):
            raise DataError(path, f"expected a JSON object, got {type(obj).__name__}", line=line_no)
        records += 1
        yield line_no, obj
    if records == 0:
        raise DataError(path, "file holds no records (only blank lines)")


def iter_delimited(
    path: str | Path, separator: str, n_fields: int, encoding: str
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for each non-blank line split on `separator` (no quoting).

    For MovieLens-style files: every line must hold exactly `n_fields` fields.
    """
    path = Path(path)
    records = 0
    for line_no, text in iter_lines(path, encoding=encoding):
        text = text.rstrip("\r\n")
        if not text.strip():
            continue
        fields = text.split(separator)
        if len(fields) != n_fields:
            raise DataError(
                path,
                f"expected {n_fields} fields separated by {separator!r}, found {len(fields)}",
                line=line_no,
            )
        records += 1
        yield line_no, fields
    if records == 0:
        raise DataError(path, "file holds no records (only blank lines)")


def iter_csv_rows(
    path: str | Path, required_columns: Sequence[str]
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row) for each data row of a UTF-8 CSV file with a header line.

    The header must name every column in `required_columns`; every row must have as many
    fields as the header. The line number is the row's first physical line (header = line 1).
    """
    path = Path(path)
    reader = csv.reader(text for _, text in iter_lines(path))
    try:
        header = next(reader)
    except csv.Error as err:
        raise DataError(path, f"malformed CSV header: {err}", line=1) from err
    missing = [name for name in required_columns if name not in header]
    if missing:
        raise DataError(
            path, f"header lacks column(s) {', '.join(missing)}; found {header}", line=1
        )
    rows = 0
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise DataError(path, f"malformed CSV: {err}", line=start) from err
        if not fields:
            continue
        if len(fields) != len(header):
            raise DataError(
                path,
                f"row has {len(fields)} columns, the header has {len(header)}",
                line=start,
            )
        rows += 1
        yield start, dict(zip(header, fields, strict=True))
    if rows == 0:
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
            path, f"missing column(s) {', '.join(missing)}; found {schema.names}", line=None
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

    def _wrong(self, name: str, expected: str, value: object) -> DataError:
        return self.error(
            f"field '{self.prefix}{name}' must be {expected}, "
            f"got {type(value).__name__} {quoted(value)}"
        )

    def text(self, name: str) -> str:
        """A required string (may be empty)."""
        value = self.raw(name, required=True)
        if not isinstance(value, str):
            raise self._wrong(name, "a string", value)
        return value

    def ident(self, name: str) -> str:
        """A required, non-blank identifier; integer ids are written as decimal text."""
        value = self.raw(name, required=True)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise self._wrong(name, "a string id", value)
        if not value.strip():
            raise self.error(f"required field '{self.prefix}{name}' is blank")
        return value

    def optional_text(self, name: str) -> str:
        """An optional string; absent or null gives ""."""
        value = self.raw(name, required=False)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self._wrong(name, "a string", value)
        return value

    def integer(self, name: str) -> int:
        """A required integer (JSON integer, not bool)."""
        value = self.raw(name, required=True)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._wrong(name, "an integer", value)
        return value

    def optional_integer(self, name: str) -> int | None:
        """An optional integer; absent or null gives None."""
        return None if self.raw(name, required=False) is None else self.integer(name)

    def number(self, name: str) -> float:
        """A required number (JSON integer or float, not bool)."""
        value = self.raw(name, required=True)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._wrong(name, "a number", value)
        if not math.isfinite(value):
            raise self._wrong(name, "a finite number", value)
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
            raise self._wrong(name, "true or false", value)
        return value

    def text_list(self, name: str, required: bool = False) -> tuple[str, ...]:
        """A list of strings; when optional, absent or null gives ()."""
        value = self.raw(name, required=required)
        if value is None:
            return ()
        if not isinstance(value, list):
            raise self._wrong(name, "a list of strings", value)
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self._wrong(f"{name}[{index}]", "a string", item)
        return tuple(value)

    def parsed_int(self, name: str) -> int:
        """A required integer written as text (CSV and MovieLens fields)."""
        value = self.text(name).strip()
        try:
            return int(value)
        except ValueError as err:
            raise self._wrong(name, "an integer", value) from err

    def parsed_float(self, name: str) -> float:
        """A required number written as text (CSV and MovieLens fields)."""
        value = self.text(name).strip()
        try:
            number = float(value)
        except ValueError as err:
            raise self._wrong(name, "a number", value) from err
        if not math.isfinite(number):
            raise self._wrong(name, "a finite number", value)
        return number

    def price(self, name: str) -> float | None:
        """An optional price: a number, or text such as "$1,299.99", "16.25 gbp", "None", "".

        Absent, null, empty and "None" give None; other text is an error.
        """
        value = self.raw(name, required=False)
        if value is None:
            return None
        if isinstance(value, str):
            text = value.strip()
            if text.lower() in NO_PRICE_TEXTS:
                return None
            match = PRICE_TEXT.match(text)
            if match is None:
                raise self._wrong(name, "a price", value)
            return float(match.group(1).replace(",", ""))
        return self.number(name)
