"""CSV (``.csv``) and TSV (``.tsv``) with a header row, through the stdlib csv module over a text stream.

Both use the csv module's default (Excel) quoting, with a tab for TSV, so files written by pandas or a
spreadsheet read back: a field may hold commas, tabs or newlines when it is quoted. Row numbers count data rows
after the header (row 1 is the first line after it; a quoted field spanning lines is still one row), and blank
rows are skipped but counted. A row with more or fewer fields than the header is a bad row; a file the csv
module cannot parse further (e.g. a field over the size limit) stops with an error naming the row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from rlaif.errors import ConfigError
from rlaif.sources.base import BadRow, Columns, Record, bad_encoding
from rlaif.sources.text import open_text

# The csv module's default limit (128 KiB a field) is below a long multi-turn conversation stored as JSON.
_FIELD_LIMIT = 16 * 1024 * 1024


def read_delimited(source: str, path: Path, delimiter: str) -> Iterator[Columns | Record | BadRow]:
    """Yield the header's Columns, then a Record per data row (values are strings) or a BadRow."""
    csv.field_size_limit(max(csv.field_size_limit(), _FIELD_LIMIT))
    with open_text(path, newline="") as stream:
        reader = csv.reader(stream, delimiter=delimiter)
        number = 0
        try:
            header = next((h for h in reader if h), None)  # blank lines before the header are not rows
            if header is None:
                return
            if bad_encoding(source, 0, None, "".join(header)):
                raise ConfigError(f"{source}: header: expected UTF-8 text")
            if len(set(header)) != len(header):
                twice = next(h for h in header if header.count(h) > 1)
                raise ConfigError(f"{source}: header: expected distinct column names, got {twice!r} twice")
            yield Columns(tuple(header))
            for number, fields in enumerate(reader, start=1):
                if not fields:
                    continue
                if len(fields) != len(header):
                    yield BadRow(source, number, None,
                                 f"expected {len(header)} fields as in the header, got {len(fields)}")
                    continue
                values = dict(zip(header, fields, strict=True))
                yield bad_encoding(source, number, values, "".join(fields)) or Record(source, number, values)
        except csv.Error as exc:
            raise ConfigError(f"{source}:{number + 1}: expected {'TSV' if delimiter == chr(9) else 'CSV'}, "
                              f"got a row the csv module cannot parse ({exc})") from None
