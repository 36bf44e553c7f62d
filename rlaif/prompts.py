"""Prompt rows: content-hash ids, deterministic splits, and the shipped demo prompt set.

A prompt's id is the hash of its conversation, so the same prompt from two sources is one row, and its split
(train/eval) follows from the id alone: no state, no order dependence, the same on every rerun.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from rlaif.engines.base import Message, content_hash
from rlaif.errors import ConfigError
from rlaif.resources import package_file

EVAL_FRACTION_PERCENT = 10  # prompts whose id falls in the first 10% of the hash space are held out


@dataclass(frozen=True)
class PromptRow:
    """One prompt: ``messages`` is the conversation the assistant answers (ending with a user turn)."""

    prompt_id: str
    messages: tuple[Message, ...]
    source: str = ""
    category: str | None = None

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]

    @property
    def split(self) -> str:
        return "eval" if int(self.prompt_id[:8], 16) % 100 < EVAL_FRACTION_PERCENT else "train"

    def as_row(self) -> dict:
        """The ``prompts`` table row."""
        return {
            "prompt_id": self.prompt_id, "text": self.text, "messages": [dict(m) for m in self.messages],
            "source": self.source, "split": self.split, "created_at": datetime.now(timezone.utc),
        }


def make_prompt(text_or_messages: str | list[Message], source: str = "", category: str | None = None) -> PromptRow:
    """Build a prompt row from a plain string or a conversation."""
    if isinstance(text_or_messages, str):
        messages: tuple[Message, ...] = ({"role": "user", "content": text_or_messages},)
    else:
        messages = tuple({"role": m["role"], "content": m["content"]} for m in text_or_messages)
    return PromptRow(content_hash("prompt", list(messages)), messages, source, category)


def demo_prompts_path() -> Path:
    return package_file("data", "demo_prompts.jsonl")


def read_jsonl_prompts(path: Path, column: str = "prompt") -> Iterator[PromptRow]:
    """Prompts from a JSONL file whose lines hold ``column`` (a string) or ``messages`` (a conversation)."""
    name = path.name
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such prompt file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}:{number}: not valid JSON ({exc.msg})") from None
        value = record.get(column, record.get("messages")) if isinstance(record, dict) else None
        if not value:
            raise ConfigError(f"{name}:{number}: expected a {column!r} string or a 'messages' list")
        yield make_prompt(value, source=str(path), category=record.get("category"))


def load_prompts(path: Path | None = None, *, limit: int | None = None) -> list[PromptRow]:
    """Read prompts (the shipped demo set by default), collapsing duplicates, keeping the first ``limit``."""
    seen: set[str] = set()
    rows: list[PromptRow] = []
    for row in read_jsonl_prompts(path or demo_prompts_path()):
        if row.prompt_id in seen:
            continue
        seen.add(row.prompt_id)
        rows.append(row)
        if limit is not None and len(rows) >= limit:
            break
    return rows

