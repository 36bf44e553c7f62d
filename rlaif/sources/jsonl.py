"""JSON Lines (``.jsonl``, ``.ndjson``, ``.json`` holding one object a line), read a line at a time.

Row numbers are line numbers; blank lines are skipped but counted, so ``FILE:ROW`` is the line an editor shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rlaif.errors import ConfigError
from rlaif.sources.base import BadRow, Record, bad_encoding, type_name
from rlaif.sources.text import open_text


def read_jsonl(source: str, path: Path) -> Iterator[Record | BadRow]:
    """Yield a Record per non-blank line (its JSON object), or a BadRow for a line that is not one."""
    with open_text(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                if number == 1 and line.lstrip().startswith("["):
                    # A whole-file JSON array cannot be streamed; say so once instead of a bad row a line.
                    raise ConfigError(f"{source}: expected JSON Lines (one object a line), got a JSON array; "
                                      "write one object a line (e.g. jq -c '.[]')") from None
                yield bad_encoding(source, number, None, line) or BadRow(
                    source, number, None, f"expected a JSON object, got invalid JSON ({exc.msg})")
                continue
            if not isinstance(value, dict):
                yield BadRow(source, number, None, f"expected a JSON object, got {type_name(value)}")
                continue
            yield bad_encoding(source, number, value, line) or Record(source, number, value)
