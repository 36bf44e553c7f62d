"""Source specs and raw rows: which reader a spec names, its normalised form, and ``read_records``.

A spec is a path (its extension or a save_to_disk folder picks the reader) or ``sql:SELECT ...``. Its normalised
form (``describe_spec``) is the identifier a run records and every row's ``source``: the absolute path as named
(symlinks are not followed, so ``latest.jsonl`` stays what the user called it), or ``sql:`` and the query text.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

from rlaif.errors import ConfigError
from rlaif.sources.base import BadRow, Columns, Record, is_sql

EXPECTED = ("expected a .jsonl (or .ndjson, or .json with one object a line), .csv, .tsv, .parquet or .txt file, "
            "a folder written by datasets.Dataset.save_to_disk, or sql:SELECT ...")
_SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt")

Spec = str | os.PathLike


def describe_spec(spec: Spec) -> str:
    """The normalised spec: an absolute path (``~`` expanded, ``..`` collapsed) or ``sql:`` + the query."""
    if is_sql(spec):
        from rlaif.sources.sql import query_text

        query = query_text(str(spec))
        if not query:
            raise ConfigError(f"sql: expected a query after 'sql:', got nothing; {EXPECTED}")
        return f"sql:{query}"
    text = os.fspath(spec)
    if not str(text).strip():
        raise ConfigError(f"no prompt source given; {EXPECTED}")
    return os.path.abspath(os.path.expanduser(text))


def open_source(spec: Spec, *, db: str | os.PathLike | None = None,
                columns: Iterable[str] | None = None) -> tuple[str, Iterator[Columns | Record | BadRow]]:
    """(normalised spec, the reader's items); checks the spec now, so a bad one fails before any row is read."""
    from rlaif.sources import arrow, delimited, jsonl, sql, text

    source = describe_spec(spec)
    if is_sql(source):
        return source, sql.read_sql(source, db)
    path = Path(source)
    if path.is_dir():
        return source, arrow.read_arrow_folder(source, path, columns)
    suffix = path.suffix.lower()
    if not path.exists():
        raise ConfigError(f"{source}: no such file or folder; {EXPECTED}")
    if suffix not in _SUFFIXES:
        raise ConfigError(f"{source}: unknown source type {suffix or '(no extension)'!r}; {EXPECTED}")
    readers = {".csv": partial(delimited.read_delimited, delimiter=","),
               ".tsv": partial(delimited.read_delimited, delimiter="\t"),
               ".parquet": partial(arrow.read_parquet, columns=columns), ".txt": text.read_text}
    return source, readers.get(suffix, jsonl.read_jsonl)(source, path)


def read_records(spec: Spec, *, db: str | os.PathLike | None = None, columns: Iterable[str] | None = None,
                 skip_bad_rows: bool = False) -> Iterator[Record] | Iterator[Record | BadRow]:
    """Stream a source's raw rows as ``Record(source, row, values)``.

    ``db`` is the project database, needed for ``sql:`` specs only. ``columns`` reads only those columns where
    the format stores columns apart (Parquet, save_to_disk folders); other formats return every column. A row
    that cannot be read (bad UTF-8, invalid JSON, a field count unlike the header) raises
    ``ConfigError("FILE:ROW: ...")``, or with ``skip_bad_rows`` is yielded as a ``BadRow`` in its place.
    Whether a row's values make sense (a pair file's columns, a prompt) is the caller's to check.
    """
    _, items = open_source(spec, db=db, columns=columns)
    return _records(items, skip_bad_rows)


def _records(items: Iterator[Columns | Record | BadRow], skip_bad_rows: bool) -> Iterator[Record | BadRow]:
    for item in items:
        if isinstance(item, BadRow) and not skip_bad_rows:
            raise ConfigError(item.message)
        if not isinstance(item, Columns):
            yield item
