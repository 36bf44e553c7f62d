"""The rows every source format yields: a ``Record`` (one row's raw values) or a ``BadRow`` (why a row was refused).

Format readers are generators over ``Columns | Record | BadRow``: a reader that knows its columns before the
first row (a CSV header, a Parquet or Arrow schema, a query's result) yields ``Columns`` first, so a missing
column is caught once for the whole source instead of once a row. Readers never hold more than one batch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

# Text formats are decoded with errors="surrogateescape": an undecodable byte 0xNN becomes the lone surrogate
# U+DCNN, which strict UTF-8 decoding can never produce, so finding one is an exact test for bad encoding and
# the reader can go on to the next line instead of losing its place in the stream.
_SURROGATE = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True, slots=True)
class Record:
    """One raw row: ``source`` the normalised spec (see ``describe_spec``), ``row`` 1-based as the user counts
    (JSONL/text line, CSV/TSV data row after the header, Parquet/Arrow/SQL result row), ``values`` by column."""

    source: str
    row: int
    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row refused with its reason: ``column`` is None when the row as a whole is unreadable (bad JSON).

    ``as_row(run_id)`` is the row of the bad-rows table that the generation branch creates (migration 004), with
    the columns ``run_id, source, row_number, column_name, reason, created_at``.
    """

    source: str
    row: int
    column: str | None
    reason: str

    @property
    def message(self) -> str:
        """One line: ``FILE:ROW: column 'x': expected ...`` (``sql:ROW: ...`` for a query)."""
        where = f"{display_name(self.source)}:{self.row}"
        return f"{where}: column {self.column!r}: {self.reason}" if self.column else f"{where}: {self.reason}"

    def as_row(self, run_id: str) -> dict:
        from rlaif.store import utcnow

        return {"run_id": run_id, "source": self.source, "row_number": self.row, "column_name": self.column,
                "reason": self.reason, "created_at": utcnow()}


@dataclass(frozen=True, slots=True)
class Columns:
    """The columns of a source, known before its first row (CSV header, Parquet/Arrow schema, query result)."""

    names: tuple[str, ...]


def is_sql(spec: object) -> bool:
    return isinstance(spec, str) and spec.lstrip()[:4].lower() == "sql:"


def display_name(source: str) -> str:
    """How a source is named in messages: the path for files, ``sql`` for a query (its text may be long)."""
    return "sql" if is_sql(source) else source


def bad_encoding(source: str, row: int, values: dict[str, Any] | None, line: str) -> BadRow | None:
    """A BadRow when ``line`` (decoded with surrogateescape) held bytes that are not UTF-8, else None.

    Names the first column whose value holds the bad byte when ``values`` are known.
    """
    found = _SURROGATE.search(line)
    if found is None:
        return None
    byte = ord(found.group()) - 0xDC00
    column = next((k for k, v in (values or {}).items() if _SURROGATE.search(_flat(v))), None)
    return BadRow(source, row, column, f"expected UTF-8 text, got byte 0x{byte:02x}")


def _flat(value: Any) -> str:
    """Every string inside a value, joined: where to look for a bad byte in nested JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "".join(_flat(k) + _flat(v) for k, v in value.items())
    if isinstance(value, list):
        return "".join(_flat(v) for v in value)
    return ""


def type_name(value: Any) -> str:
    """A value's type as a user reads it in a message: NULL, a string, a number, a list, an object."""
    if value is None:
        return "NULL"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
             tuple: "a list", dict: "an object", bytes: "bytes"}
    return names.get(type(value), type(value).__name__)
