"""The read-only SQL sandbox behind ``rlaif sql``.

DuckDB itself is the guard: the database opens read-only with file access, extensions and settings locked, so
no statement can write, read another file, or unlock either. The statement check in front of it exists to give
clear one-line messages ("rlaif sql is read-only: INSERT is not allowed") instead of DuckDB's.

On a lake (``ducklake:``) the same guard holds: the lake is attached read-only, and file access is then locked to
the lake's data path. The PostgreSQL catalog stays reachable through the postgres extension's table functions
(``postgres_query`` runs any SQL the catalog's role may run, in a read-only transaction), so those are refused by
name; give readers a PostgreSQL role that may only SELECT as well (docs/storage.md, "The lake").
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

import duckdb

from rlaif.errors import ConfigError, StoreError
from rlaif.lake import is_lake
from rlaif.store import Store, error_line

if TYPE_CHECKING:
    import pyarrow as pa

SANDBOX_CONFIG: dict[str, Any] = {
    "enable_external_access": False,  # no files, no network: only the database itself
    "lock_configuration": True,  # no SET/PRAGMA that changes settings
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
}
# Statement types a query may have; anything else is refused before DuckDB sees it.
_READ_TYPES = {"SELECT", "EXPLAIN", "PRAGMA"}
_READ_PRAGMAS = {
    "table_info", "show_tables", "show_tables_expanded", "show", "database_size", "database_list",
    "storage_info", "version", "platform", "functions", "collations", "show_databases", "metadata_info",
}


_MODIFIERS = {"OR", "REPLACE", "TEMP", "TEMPORARY", "PERSISTENT", "UNIQUE"}
_CATALOG_FUNCTIONS = re.compile(r"\b(postgres_\w+)\s*\(", re.I)  # a lake's catalog server, reached directly


def _statement_label(query: str) -> str:
    """The leading keyword(s) of a statement, for messages: 'INSERT', 'CREATE TABLE', 'COPY ... TO'."""
    words = [w for w in re.findall(r"[A-Za-z_]+", query)[:6] if w.upper() not in _MODIFIERS]
    head = words[0].upper() if words else "?"
    if head in {"CREATE", "DROP", "ALTER", "FORCE", "EXPORT", "PRAGMA"} and len(words) > 1:
        return f"{head} {words[1].upper() if head != 'PRAGMA' else words[1]}"
    if head == "COPY":
        return "COPY ... TO" if re.search(r"\bTO\b", query, re.I) else "COPY ... FROM"
    return head


def _check_lake(db: str | Path, statement: str) -> str:
    """On a lake, refuse the functions that reach its catalog server past the lake (see the module docstring)."""
    found = _CATALOG_FUNCTIONS.search(statement) if is_lake(db) else None
    if found:
        raise StoreError(f"rlaif sql cannot call {found.group(1)} on a lake: it reaches the catalog server directly")
    return statement


def _check_read_only(sql: str) -> str:
    """Refuse anything but a single read statement; returns that statement's text."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise StoreError(f"rlaif sql: {error_line(exc)}") from None
    if len(statements) != 1:
        raise StoreError(f"rlaif sql runs exactly one statement; got {len(statements)}")
    stmt = statements[0]
    try:
        kind = stmt.type.name
    except ValueError:  # a statement type this duckdb build cannot even name
        kind = "UNKNOWN"
    label = _statement_label(stmt.query)
    if kind not in _READ_TYPES:
        raise StoreError(f"rlaif sql is read-only: {label} is not allowed (only SELECT, WITH, DESCRIBE, SHOW)")
    if kind == "PRAGMA" and label.split()[-1].lower() not in _READ_PRAGMAS:
        raise StoreError(f"rlaif sql is read-only: {label} is not allowed")
    if kind == "EXPLAIN":
        inner = re.sub(r"^\s*EXPLAIN(\s+ANALY[SZ]E)?\s+", "", stmt.query, flags=re.I)
        _check_read_only(inner)
    return stmt.query


def _sandbox_error(exc: duckdb.Error, timeout_s: float) -> StoreError:
    """Turn a DuckDB refusal into one line that says what was refused and why."""
    text = error_line(exc)
    if isinstance(exc, duckdb.InterruptException):
        return StoreError(
            f"rlaif sql stopped the query after {timeout_s:g}s (a long read holds the database and delays a "
            "running flow's writes); add a LIMIT or a WHERE, or export the dataset"
        )
    if "file system operations are disabled" in text:
        where = re.search(r'"([^"]*)"', text)
        return StoreError(f"rlaif sql cannot read files outside the database: {where.group(1) if where else text}")
    if "configuration has been locked" in text:
        return StoreError("rlaif sql is read-only: settings cannot be changed")
    if "extensions is disabled" in text:
        return StoreError("rlaif sql cannot load extensions")
    if "read-only mode" in text:
        kind = re.search(r'statement of type "(\w+)"', text)
        return StoreError(f"rlaif sql is read-only: {kind.group(1) if kind else 'writing'} is not allowed")
    return StoreError(f"rlaif sql: {text}")


@contextlib.contextmanager
def _sandboxed(db: str | Path, sql: str, timeout_s: float) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    """The one guarded connection every sandbox entry point runs its statement on: the statement checked (one
    read-only statement; on a lake, no catalog functions), a read-only connection with files, extensions and
    settings locked, a timer that interrupts it after ``timeout_s``, and DuckDB's refusals as one-line errors."""
    statement = _check_lake(db, _check_read_only(sql))
    with Store(db).connect(read_only=True, config=SANDBOX_CONFIG) as con:
        timer = threading.Timer(timeout_s, con.interrupt)
        timer.start()
        try:
            yield con, statement
        except duckdb.Error as exc:
            raise _sandbox_error(exc, timeout_s) from None
        finally:
            timer.cancel()


def sandbox_rows(
    db: str | Path, sql: str, *, max_rows: int = 10_000, timeout_s: float = 10.0
) -> tuple[list[str], list[tuple], bool]:
    """Run one read-only query in the sandbox: (column names, at most ``max_rows`` rows, whether more existed).

    The connection is read-only with file access, extensions and settings locked, so the statement check above
    is a convenience for clear messages and DuckDB itself is the guard. ``timeout_s`` (below a writer's lock
    timeout) keeps a long query from starving a flow that is writing to the same file.
    """
    with _sandboxed(db, sql, timeout_s) as (con, statement):
        cur = con.execute(statement)
        columns = [d[0] for d in cur.description or ()]
        rows = cur.fetchmany(max_rows + 1)
    return columns, rows[:max_rows], len(rows) > max_rows


def sandbox_batches(
    db: str | Path, sql: str, *, batch_rows: int = 1024, timeout_s: float = 60.0
) -> Iterator[pa.RecordBatch]:
    """Run one read-only query in the sandbox and yield its result as Arrow record batches of ``batch_rows``.

    The same guard as ``sandbox_rows`` (read-only, no files, settings locked), for results too big to hold:
    the prompt sources read ``sql:`` queries with it. The file stays open until the generator is drained or
    closed, and ``timeout_s`` counts from the start, so a consumer should drain it quickly (the sources spool
    the batches to a temporary file) rather than hold the database while it works.
    """
    with _sandboxed(db, sql, timeout_s) as (con, statement):
        yield from con.sql(statement).to_arrow_reader(batch_rows)


def _text(value: Any) -> str:
    """One cell as text: lists and structs (messages) as JSON, NULL as empty."""
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _to_table(columns: list[str], rows: list[tuple], left_out: int, max_width: int = 80) -> str:
    """A plain aligned table; cells are cut at ``max_width`` (csv/json give full values), numbers right-aligned."""

    def cell(value: Any) -> str:
        text = "NULL" if value is None else _text(value).replace("\n", "\\n")
        return text if len(text) <= max_width else text[: max_width - 3] + "..."

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    numeric = []
    for i in range(len(columns)):
        present = [r[i] for r in rows if r[i] is not None]
        numeric.append(bool(present) and all(isinstance(v, (int, float, Decimal)) and not isinstance(v, bool)
                                               for v in present))

    def line(values: list[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric, strict=True)]
        return " | ".join(parts).rstrip()

    out = [line(columns), "-+-".join("-" * w for w in widths)] + [line(r) for r in cells]
    n = len(rows)
    out.append(f"(first {n} rows shown, {left_out} more left out; add a LIMIT or a WHERE, or use --max-rows)"
               if left_out else f"({n} row{'s' if n != 1 else ''})")
    return "\n".join(out) + "\n"


FORMATS = ("table", "csv", "json", "jsonl")
Format = Literal["table", "csv", "json", "jsonl"]
TABLE_ROWS = 10_000  # the table format's limit when none is given: past that an aligned table is unreadable
_FETCH_ROWS = 1024  # rows fetched per call while streaming


@dataclass(frozen=True)
class Written:
    """What ``sandbox_write`` wrote: how many rows, and how many more the query had past ``max_rows``."""

    rows: int
    left_out: int


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")


def _write_rows(out: TextIO, fmt: str, columns: list[str], rows: list[tuple], first: bool) -> None:
    """One chunk of rows in a streaming format; ``first`` says whether nothing has been written yet."""
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        if first:
            writer.writerow(columns)
        writer.writerows([_text(v) for v in row] for row in rows)
        return
    for i, row in enumerate(rows):
        text = json.dumps(dict(zip(columns, row, strict=True)), default=str, ensure_ascii=False)
        if fmt == "jsonl":
            out.write(text + "\n")
        else:  # one JSON array, written element by element
            out.write(("[" if first and i == 0 else ", ") + text)


def sandbox_write(db: str | Path, sql: str, out: TextIO, *, fmt: Format = "csv", max_rows: int | None = None,
                  timeout_s: float = 10.0) -> Written:
    """Run one read-only query and write its rows to ``out`` as they are fetched: every row, or the first
    ``max_rows`` (the table format defaults to ``TABLE_ROWS``). Rows past the limit are counted, not kept, so the
    caller can say how many were left out. Memory stays at one fetch, except for the table (its widths need
    every shown row). The same guard and timeout as ``sandbox_rows``.
    """
    _check_format(fmt)
    limit = TABLE_ROWS if max_rows is None and fmt == "table" else max_rows
    written = left_out = 0
    shown: list[tuple] = []
    with _sandboxed(db, sql, timeout_s) as (con, statement):
        cur = con.execute(statement)
        columns = [d[0] for d in cur.description or ()]
        while rows := cur.fetchmany(_FETCH_ROWS):
            room = len(rows) if limit is None else max(0, min(len(rows), limit - written))
            left_out += len(rows) - room
            if fmt == "table":
                shown.extend(rows[:room])
            elif room:
                _write_rows(out, fmt, columns, rows[:room], first=written == 0)
            written += room
    if fmt == "table":
        out.write(_to_table(columns, shown, left_out))
    elif fmt == "csv" and written == 0:
        _write_rows(out, fmt, columns, [], first=True)
    elif fmt == "json":
        out.write("[]\n" if written == 0 else "]\n")
    return Written(written, left_out)


def sandbox_query(
    db: str | Path,
    sql: str,
    *,
    fmt: Format = "table",
    max_rows: int = 10_000,
    timeout_s: float = 10.0,
) -> str:
    """Run one read-only query and format it as one string (``sandbox_write`` into memory): an aligned text
    table, CSV with a header, a JSON array or JSON lines, of at most ``max_rows`` rows. The table says when rows
    were left out; callers that need every row, or the count left out, use ``sandbox_write``.
    """
    buf = io.StringIO()
    sandbox_write(db, sql, buf, fmt=fmt, max_rows=max_rows, timeout_s=timeout_s)
    text = buf.getvalue()
    return text[:-1] if fmt == "json" else text  # the JSON array as before, without a trailing newline
