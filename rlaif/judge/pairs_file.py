"""Pair files users bring: ``prompt``, ``response_a``, ``response_b`` [, ``label``], or ``prompt``, ``chosen``,
``rejected`` as reward-model benchmarks ship them, in any prompt-source format (``rlaif.sources.read_records``:
JSONL, CSV/TSV, Parquet, save_to_disk folders, ``sql:``).

A bad row stops the read with one line, ``FILE:ROW: column 'x': expected ...``. ``prompt`` is a string or a
list of ``{role, content}`` turns ending with the user's. A ``chosen``/``rejected`` row is shown with the chosen
response in slot (A) for half the pairs and in slot (B) for the others (by the pair's hash), so that a judge
that prefers one slot does not look good or bad on single-order agreement by the file's convention alone.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from rlaif.engines.base import Message
from rlaif.errors import ConfigError
from rlaif.judge.pairing import Candidate, Pair, pair_id
from rlaif.prompts import make_prompt
from rlaif.sources.base import display_name

Label = Literal["A", "B"]
ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class LabelledPair:
    """A pair from a file; ``label`` names the better of the file's ``response_a``/``response_b`` (or None)."""

    pair: Pair
    label: Label | None
    row: int
    source: str
    kind: str | None = None   # what the pair tests (e.g. harmlessness), from an optional ``kind`` column
    split: str | None = None  # 'dev' (for choosing) or 'eval' (for reporting), from an optional ``split`` column

    @property
    def given(self) -> tuple[Candidate, Candidate]:
        """(response_a, response_b) as the file gives them."""
        return (self.pair.b, self.pair.a) if self.pair.swapped else (self.pair.a, self.pair.b)

    @property
    def a_is_better(self) -> bool | None:
        """Whether the pair's canonical ``a`` is the labelled better response."""
        if self.label is None:
            return None
        return (self.label == "A") != self.pair.swapped


class _Bad(Exception):
    def __init__(self, column: str, reason: str):
        super().__init__(reason)
        self.column, self.reason = column, reason


def read_pair_file(spec: str | os.PathLike, *, require_label: bool = False, db: Any = None,
                   limit: int | None = None, split: str | None = None) -> Iterator[LabelledPair]:
    """Stream the pairs of a pair file; the first bad row raises ``ConfigError`` naming file, row and column.

    With ``split``, only the rows whose ``split`` column equals it (a file without that column has none).
    """
    from rlaif.sources import read_records

    count = 0
    for record in read_records(spec, db=db):
        if limit is not None and count >= limit:
            return
        try:
            pair = _pair(record.values, record.source, record.row, require_label)
            if split is not None and pair.split != split:
                continue
            yield pair
        except _Bad as bad:
            raise ConfigError(f"{display_name(record.source)}:{record.row}: column {bad.column!r}: "
                              f"{bad.reason}") from None
        count += 1


def _pair(values: dict[str, Any], source: str, row: int, require_label: bool) -> LabelledPair:
    prompt = make_prompt(list(_conversation(values)), source=source)
    if "chosen" in values or "rejected" in values:
        chosen, rejected = _text(values, "chosen"), _text(values, "rejected")
        flip = int(pair_id(prompt.prompt_id, chosen, rejected)[:8], 16) % 2 == 1
        a, b, label = (rejected, chosen, "B") if flip else (chosen, rejected, "A")
    else:
        a, b, label = _text(values, "response_a"), _text(values, "response_b"), _label(values, require_label)
    pair = Pair.make(prompt.prompt_id, prompt.messages, Candidate(a, "user"), Candidate(b, "user"))
    return LabelledPair(pair, label, row, source, _optional(values, "kind"), _optional(values, "split"))


def _optional(values: dict[str, Any], column: str) -> str | None:
    value = values.get(column)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _Bad(column, f"expected a non-empty string or nothing, got {_type(value)}")
    return value.strip()


def _text(values: dict[str, Any], column: str) -> str:
    if column not in values:
        raise _Bad(column, f"expected a string, got no such column (columns: {', '.join(values) or 'none'})")
    value = values[column]
    if not isinstance(value, str):
        raise _Bad(column, f"expected a string, got {_type(value)}")
    if not value.strip():
        raise _Bad(column, "expected text, got an empty string")
    return value


def _label(values: dict[str, Any], required: bool) -> Label | None:
    value = values.get("label")
    if value is None:
        if required:
            raise _Bad("label", "expected \"A\" or \"B\" (judge eval needs labelled pairs), got none")
        return None
    if value not in ("A", "B"):
        raise _Bad("label", f"expected \"A\" or \"B\", got {value!r}")
    return value


def _conversation(values: dict[str, Any]) -> tuple[Message, ...]:
    if "prompt" not in values:
        raise _Bad("prompt", f"expected a string or a list of turns, got no such column "
                             f"(columns: {', '.join(values) or 'none'})")
    value = values["prompt"]
    if isinstance(value, str):
        if not value.strip():
            raise _Bad("prompt", "expected text, got an empty string")
        return ({"role": "user", "content": value},)
    if not isinstance(value, (list, tuple)) or not value:
        raise _Bad("prompt", f"expected a string or a list of {{role, content}} turns, got {_type(value)}")
    turns = []
    for i, turn in enumerate(value, start=1):
        ok = isinstance(turn, dict) and turn.get("role") in ROLES and isinstance(turn.get("content"), str)
        if not ok:
            raise _Bad("prompt", f"expected turn {i} to be a {{role, content}} object with role system, user or "
                                 f"assistant, got {turn!r:.80}")
        turns.append({"role": turn["role"], "content": turn["content"]})
    if turns[-1]["role"] != "user":
        raise _Bad("prompt", f"expected the last turn to be the user's, got {turns[-1]['role']!r}")
    return tuple(turns)


def _type(value: Any) -> str:
    names = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return "nothing (null)" if value is None else names.get(type(value), type(value).__name__)
