"""TEMPORARY: the contract of ``rlaif.sources`` (read_prompts / check_prompts / BadRow) over JSONL files only,
until the sources branch merges; then this module goes. Not for use outside ``rlaif.runner``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rlaif.errors import ConfigError
from rlaif.prompts import PromptRow, make_prompt


@dataclass(frozen=True)
class HelpfulPrompt(PromptRow):
    helpful: bool = False


@dataclass(frozen=True)
class BadRow:
    source: str
    row: int
    column: str | None
    reason: str

    @property
    def message(self) -> str:
        where = f"{Path(self.source).name}:{self.row}"
        return f"{where}: column {self.column!r}: {self.reason}" if self.column else f"{where}: {self.reason}"

    def as_row(self, run_id: str) -> dict:
        from rlaif.store import utcnow

        return {"run_id": run_id, "source": self.source, "row_number": self.row, "column_name": self.column,
                "reason": self.reason, "created_at": utcnow()}


@dataclass(frozen=True)
class SourceCheck:
    count: int
    bad_rows: int


def read_prompts(spec: str, *, prompt_column: str = "prompt", helpful_column: str | None = None,
                 all_helpful: bool = False, skip_bad_rows: bool = False, limit: int | None = None,
                 db: object = None) -> Iterator[PromptRow | BadRow]:
    path = Path(spec)
    if not path.is_file():
        raise ConfigError(f"{spec}: no such prompt file")
    seen: set[str] = set()
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            bad = _bad(path, number, line, prompt_column, helpful_column)
            if isinstance(bad, BadRow):
                if not skip_bad_rows:
                    raise ConfigError(bad.message)
                yield bad
                continue
            record = bad
            value = record.get(prompt_column, record.get("messages"))
            row = make_prompt(value, source=str(path), category=record.get("category"))
            if row.prompt_id in seen:
                continue
            seen.add(row.prompt_id)
            if limit is not None and len(seen) > limit:
                return
            value = record.get(helpful_column) if helpful_column else None
            helpful = all_helpful or value is True or str(value).lower() in ("true", "1", "yes", "helpful")
            yield HelpfulPrompt(row.prompt_id, row.messages, row.source, row.category, helpful)


def _bad(path: Path, number: int, line: str, column: str, helpful_column: str | None) -> dict | BadRow:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadRow(str(path), number, None, f"not valid JSON ({exc.msg})")
    if not isinstance(record, dict):
        return BadRow(str(path), number, None, "expected a JSON object")
    value = record.get(column, record.get("messages"))
    if not value or not isinstance(value, (str, list)):
        return BadRow(str(path), number, column, "expected a non-empty string (or a 'messages' list)")
    return record


def check_prompts(spec: str, **kwargs: object) -> SourceCheck:
    count = bad = 0
    for item in read_prompts(spec, **kwargs):  # type: ignore[arg-type]
        if isinstance(item, BadRow):
            bad += 1
        else:
            count += 1
    return SourceCheck(count, bad)
