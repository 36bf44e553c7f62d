"""Plain text (``.txt``): one prompt a line, in the column ``prompt``; blank lines are skipped but counted.

Also the one place text files are opened, for every text format: UTF-8 (a leading byte-order mark, as Excel
writes, is dropped) with undecodable bytes kept as surrogates, so a bad byte is a bad row, not a crash.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from rlaif.sources.base import BadRow, Columns, Record, bad_encoding

TEXT_COLUMN = "prompt"


def open_text(path: Path, newline: str | None = None) -> TextIO:
    """Open a text source for streaming; ``newline=""`` is what the csv module wants."""
    return open(path, encoding="utf-8-sig", errors="surrogateescape", newline=newline)


def read_text(source: str, path: Path) -> Iterator[Columns | Record | BadRow]:
    """Yield ``Record(values={"prompt": line})`` per non-blank line (line ending removed, text kept as is)."""
    yield Columns((TEXT_COLUMN,))
    with open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            values = {TEXT_COLUMN: text}
            yield bad_encoding(source, number, values, text) or Record(source, number, values)
