"""Prompts from any source: each raw row validated into a ``PromptRow``, or refused as a ``BadRow`` with its reason.

A row's prompt is, in order of preference: the ``prompt_column`` value, a string (one user turn) or a list of
``{role, content}`` turns (TRL's conversational ``prompt``); else the ``messages`` column, a list of turns (or,
from CSV/TSV/SQL text, that list as JSON). A conversation is kept whole: roles are system (first turn only),
user and assistant, contents are strings, and it ends with a non-empty user turn, the one the policy answers.
Other keys of a turn (``name``, tool fields) are dropped, as ``make_prompt`` hashes role and content only.

Helpful rows (the paper's helpfulness samples, whose answer is kept unrevised): ``all_helpful=True`` marks every
row; else ``helpful_column`` names a column whose value ``True``, ``1``, or the text ``true``, ``1``, ``yes`` or
``helpful`` (any case) marks its row. Any other value, NULL or an absent key means not helpful, so a category
column serves as it is (``helpful_column="category"`` marks the rows whose category is ``helpful``); a column
name that a CSV header or a schema lacks is an error, and ``check_prompts`` counts the helpful rows.

Duplicates (same conversation, so same prompt id) collapse to their first row; its ``helpful`` and ``category``
win. The seen-set holds each id as a 128-bit int (the id's 32 hex digits), measured at about 78 MB per million
prompts (a set of the 32-character strings takes about 115 MB); no row is kept.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from rlaif.engines.base import Message
from rlaif.errors import ConfigError
from rlaif.prompts import PromptRow, make_prompt
from rlaif.sources.base import BadRow, Columns, Record, display_name, type_name
from rlaif.sources.records import Spec, open_source

MESSAGES = "messages"
ROLES = ("system", "user", "assistant")
TRUE_TEXT = frozenset({"true", "1", "yes", "helpful"})
MAX_BAD_ROWS = 100  # kept by check_prompts; the total is counted past it
SAMPLE_ROWS = 3


@dataclass(frozen=True)
class SourceCheck:
    """One validating pass: ``count`` unique valid prompts (a run's total), the first ``MAX_BAD_ROWS`` bad rows
    and their ``bad_total``, rows collapsed as ``duplicates``, and how many prompts are ``helpful``."""

    count: int
    bad_rows: list[BadRow] = field(default_factory=list)
    bad_total: int = 0
    duplicates: int = 0
    helpful: int = 0


@dataclass(frozen=True)
class SourceInfo:
    """What ``rlaif prompts inspect`` shows: ``count`` unique valid prompts of ``rows`` rows read, the
    ``columns`` (schema, header, or every key seen in JSON Lines), the first ``sample`` rows, and the check."""

    source: str
    count: int
    rows: int
    columns: list[str]
    sample: list[Record]
    check: SourceCheck
    prompt_column: str = "prompt"
    suggested: list[str] = field(default_factory=list)  # likely prompt columns, when no row has prompt_column

    @property
    def has_prompt_column(self) -> bool:
        """Whether any row has the prompt column (or ``messages``): else nothing was read as a prompt yet."""
        return self.prompt_column in self.columns or MESSAGES in self.columns


@dataclass(frozen=True)
class _Options:
    prompt_column: str
    helpful_column: str | None
    all_helpful: bool


def _check_columns(source: str, names: tuple[str, ...], opts: _Options, prompt: bool = True) -> None:
    """A column the whole source lacks is one error, not a bad row per row (and cannot be skipped). ``prompt``
    False checks the helpful column only (``inspect_source`` shows a source that lacks the prompt column)."""
    listed = ", ".join(names) or "none"
    if prompt and opts.prompt_column not in names and MESSAGES not in names:
        raise ConfigError(f"{display_name(source)}: column {opts.prompt_column!r}: expected a column "
                          f"{opts.prompt_column!r} or {MESSAGES!r}, got columns: {listed}")
    if opts.helpful_column is not None and opts.helpful_column not in names and not opts.all_helpful:
        raise ConfigError(f"{display_name(source)}: column {opts.helpful_column!r}: expected a column of "
                          f"helpful flags, got columns: {listed}")


def _turns(value: Any) -> tuple[Message, ...] | str:
    """A conversation as validated turns, or the reason it is refused (a string starting 'expected')."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return "expected a list of {role, content} turns, got text that is not JSON"
    if not isinstance(value, (list, tuple)) or not value:
        return f"expected a list of {{role, content}} turns, got {'an empty list' if value == [] else type_name(value)}"
    turns: list[Message] = []
    for i, turn in enumerate(value, start=1):
        if not isinstance(turn, dict) or "role" not in turn or "content" not in turn:
            got = f"keys {', '.join(map(str, turn))}" if isinstance(turn, dict) else type_name(turn)
            return f"expected turn {i} to be a {{role, content}} object, got {got}"
        role, content = turn["role"], turn["content"]
        if role not in ROLES:
            return f"expected turn {i}'s role to be system, user or assistant, got {role!r}"
        if role == "system" and i > 1:
            return f"expected a system turn only as turn 1, got one as turn {i}"
        if not isinstance(content, str):
            return f"expected turn {i}'s content to be a string, got {type_name(content)}"
        turns.append({"role": role, "content": content})
    if turns[-1]["role"] != "user":
        return f"expected the last turn to be the user's, got {turns[-1]['role']!r}"
    if not turns[-1]["content"].strip():
        return "expected text in the last user turn, got an empty string"
    return tuple(turns)


def _prompt_value(values: dict[str, Any], opts: _Options) -> tuple[str, str | tuple[Message, ...]]:
    """(column read, the prompt text or turns); the second is a reason string starting 'expected' on failure."""
    column = opts.prompt_column
    if column not in values or (values[column] is None and MESSAGES in values and column != MESSAGES):
        if MESSAGES not in values:
            keys = ", ".join(values) or "none"
            return column, f"expected a string or a {MESSAGES!r} list, got no such column (columns: {keys})"
        column = MESSAGES
    value = values[column]
    if column == MESSAGES or isinstance(value, (list, tuple)):
        return column, _turns(value)
    if not isinstance(value, str):
        return column, f"expected a string or a list of {{role, content}} turns, got {type_name(value)}"
    if not value.strip():
        return column, "expected text, got an empty string"
    return column, ({"role": "user", "content": value},)


def is_helpful(value: Any) -> bool:
    """The helpful flag of one cell: True, 1, or 'true'/'1'/'yes'/'helpful' in any case; anything else is not."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    return isinstance(value, str) and value.strip().lower() in TRUE_TEXT


def to_prompt(record: Record, opts: _Options) -> PromptRow | BadRow:
    """One raw row -> its PromptRow (source, category and helpful flag set), or the BadRow saying why not."""
    column, prompt = _prompt_value(record.values, opts)
    if isinstance(prompt, str):
        return BadRow(record.source, record.row, column, prompt)
    category = record.values.get("category")
    helpful = opts.all_helpful or (opts.helpful_column is not None
                                   and is_helpful(record.values.get(opts.helpful_column)))
    return make_prompt(list(prompt), source=record.source,
                       category=None if category is None else str(category), helpful=helpful)


class _Collapser:
    """Validates a reader's items and drops repeated prompt ids, counting what it drops."""

    def __init__(self, source: str, opts: _Options, check_prompt_column: bool = True):
        self.source, self.opts, self.check_prompt_column = source, opts, check_prompt_column
        self.seen: set[int] = set()
        self.duplicates = 0

    def __call__(self, item: Columns | Record | BadRow) -> PromptRow | BadRow | None:
        if isinstance(item, Columns):
            _check_columns(self.source, item.names, self.opts, prompt=self.check_prompt_column)
            return None
        row = to_prompt(item, self.opts) if isinstance(item, Record) else item
        if isinstance(row, PromptRow):
            key = int(row.prompt_id, 16)  # 128-bit int: smaller than the 32-char string (see module docstring)
            if key in self.seen:
                self.duplicates += 1
                return None
            self.seen.add(key)
        return row


def _stream(spec: Spec, opts: _Options, *, skip_bad_rows: bool, limit: int | None, db: Any,
            columns: list[str] | None, observe: Callable[[Columns | Record | BadRow], None] | None = None,
            check_prompt_column: bool = True) -> tuple[_Collapser, Iterator[PromptRow | BadRow]]:
    """The collapser (for its counts) and the generator of prompts and bad rows; the spec is checked now."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit: expected at least 1, got {limit}")
    source, items = open_source(spec, db=db, columns=columns)
    collapse = _Collapser(source, opts, check_prompt_column)

    def generate() -> Iterator[PromptRow | BadRow]:
        taken = 0
        for item in items:
            if observe is not None:
                observe(item)
            row = collapse(item)
            if row is None:
                continue
            if isinstance(row, BadRow) and not skip_bad_rows:
                raise ConfigError(row.message)
            yield row
            if isinstance(row, PromptRow):
                taken += 1
                if limit is not None and taken >= limit:
                    return

    return collapse, generate()


def _options(prompt_column: str, helpful_column: str | None, all_helpful: bool) -> _Options:
    if not prompt_column:
        raise ConfigError("prompt_column: expected a column name, got an empty string")
    return _Options(prompt_column, helpful_column or None, all_helpful)


def _wanted(opts: _Options) -> list[str]:
    """The columns a prompt reads: Parquet and Arrow folders read only these."""
    return [c for c in (opts.prompt_column, MESSAGES, opts.helpful_column, "category") if c]


def read_prompts(spec: Spec, *, prompt_column: str = "prompt", helpful_column: str | None = None,
                 all_helpful: bool = False, skip_bad_rows: bool = False, limit: int | None = None,
                 db: Any = None) -> Iterator[PromptRow | BadRow]:
    """Stream a source's prompts, duplicates collapsed, in source order (see the module docstring for the rules).

    Without ``skip_bad_rows`` the first bad row raises ``ConfigError("FILE:ROW: column 'x': expected ...")``;
    with it the ``BadRow`` is yielded in its place. ``limit`` stops after that many prompts. ``db`` is the
    project database (for ``sql:`` specs). A bad spec (missing file, unknown type) raises at the call.
    """
    opts = _options(prompt_column, helpful_column, all_helpful)
    return _stream(spec, opts, skip_bad_rows=skip_bad_rows, limit=limit, db=db, columns=_wanted(opts))[1]


def check_prompts(spec: Spec, *, prompt_column: str = "prompt", helpful_column: str | None = None,
                  all_helpful: bool = False, skip_bad_rows: bool = False, limit: int | None = None,
                  db: Any = None) -> SourceCheck:
    """``read_prompts``'s validation as one pass that keeps no prompt: the run's total, bad rows and duplicates.

    Raises like ``read_prompts`` at the first bad row without ``skip_bad_rows``, so a run calls it first and
    stops before any write; with it the bad rows are counted (the first ``MAX_BAD_ROWS`` kept).
    """
    opts = _options(prompt_column, helpful_column, all_helpful)
    collapse, rows = _stream(spec, opts, skip_bad_rows=skip_bad_rows, limit=limit, db=db, columns=_wanted(opts))
    return _tally(rows, collapse)


def _tally(rows: Iterator[PromptRow | BadRow], collapse: _Collapser) -> SourceCheck:
    count = helpful = bad_total = 0
    bad: list[BadRow] = []
    for row in rows:
        if isinstance(row, BadRow):
            bad_total += 1
            if len(bad) < MAX_BAD_ROWS:
                bad.append(row)
        else:
            count += 1
            helpful += row.helpful
    return SourceCheck(count, bad, bad_total, collapse.duplicates, helpful)


def inspect_source(spec: Spec, *, prompt_column: str = "prompt", helpful_column: str | None = None,
                   db: Any = None) -> SourceInfo:
    """Read a whole source once, writing nothing: its columns, first rows, prompt count and every bad row's count.

    Never raises for a bad row (they are counted in ``check``); a bad spec or a missing helpful column still
    raises. A source with no prompt column (nor ``messages``) is shown all the same, with ``suggested`` columns
    to pass as ``prompt_column``.
    """
    opts = _options(prompt_column, helpful_column, False)
    columns: dict[str, None] = {}  # insertion-ordered set: the schema, or every key JSON Lines rows used
    sample: list[Record] = []
    rows = 0

    def observe(item: Columns | Record | BadRow) -> None:
        nonlocal rows
        if isinstance(item, Columns):
            columns.update(dict.fromkeys(item.names))
            return
        rows += 1
        if isinstance(item, Record):
            columns.update(dict.fromkeys(item.values))
            if len(sample) < SAMPLE_ROWS:
                sample.append(item)

    collapse, stream = _stream(spec, opts, skip_bad_rows=True, limit=None, db=db, columns=None, observe=observe,
                               check_prompt_column=False)
    check = _tally(stream, collapse)
    info = SourceInfo(collapse.source, check.count, rows, list(columns), sample, check, opts.prompt_column)
    if info.has_prompt_column:
        return info
    return replace(info, check=replace(check, bad_rows=[], bad_total=0), suggested=suggest_prompt_columns(sample))


# Column names that usually hold the prompt in public datasets, best first.
_PROMPT_NAMES = ("question", "instruction", "query", "input", "text", "conversation", "conversations", "request",
                 "problem", "content")


def suggest_prompt_columns(sample: list[Record]) -> list[str]:
    """Columns of the sample rows that could be the prompt, likeliest first: a usual name, then text or a list of
    turns, longer text first. Empty when no column holds text."""
    lengths: dict[str, list[int]] = {}
    for record in sample:
        for name, value in record.values.items():
            if isinstance(value, str) and value.strip() and not _is_number(value):  # CSV ids are text too
                lengths.setdefault(name, []).append(len(value))
            elif isinstance(value, (list, tuple)) and not isinstance(_turns(value), str):
                lengths.setdefault(name, []).append(sum(len(t["content"]) for t in value))
    usual = {name: i for i, name in enumerate(_PROMPT_NAMES)}
    return sorted(lengths, key=lambda n: (usual.get(n.lower(), len(usual)), -sum(lengths[n]) / len(lengths[n])))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
