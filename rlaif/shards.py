"""Sharding a generation over machines by prompt-hash range, and merging the shards' databases into one.

Shard ``i/n`` (1-based, as ``--shard 2/4`` reads) owns the prompts whose 64-bit shard hash falls in the i-th of n
equal ranges of the hash space. The shard hash is SHA-256 of ``"shard:" + prompt_id``, not the prompt id itself,
so that shards do not line up with the train/eval split (which reads the id's leading digits). A range, unlike a
modulus, nests: shard i of n is exactly shards 2i-1 and 2i of 2n, so doubling the machines splits every shard
in two and moves no prompt to an unrelated shard. Every id belongs to exactly one shard, whatever the process,
machine or Python version, because nothing but the id goes into the hash.

Each worker writes its own DuckDB file (nothing shared across machines). ``merge_shards`` copies every table's
rows into the target with ``INSERT OR IGNORE``: row keys are content hashes, so a row two shards both made (a
prompt, say) is stored once, and merging a shard twice adds nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from rlaif.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from rlaif.prompts import PromptRow

MAX_SHARDS = 65_536
_SPACE = 1 << 64
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")

P = TypeVar("P", bound="PromptRow")


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/4"`` -> ``(2, 4)``; a malformed or out-of-range shard is a one-line ``ConfigError``."""
    match = _SHARD_RE.match(text or "")
    if not match:
        raise ConfigError(f"--shard: expected I/N such as 1/4, got {text!r}")
    i, n = int(match.group(1)), int(match.group(2))
    if not 1 <= n <= MAX_SHARDS:
        raise ConfigError(f"--shard {text}: N must be between 1 and {MAX_SHARDS}, got {n}")
    if not 1 <= i <= n:
        raise ConfigError(f"--shard {text}: I must be between 1 and N ({n}), got {i}")
    return i, n


def shard_hash(prompt_id: str) -> int:
    """The prompt's place in the 64-bit shard hash space."""
    return int.from_bytes(hashlib.sha256(f"shard:{prompt_id}".encode()).digest()[:8], "big")


def shard_of(prompt_id: str, n: int) -> int:
    """Which of ``n`` shards (1..n) owns ``prompt_id``: the equal hash range its shard hash falls in."""
    if not 1 <= n <= MAX_SHARDS:
        raise ValueError(f"n must be between 1 and {MAX_SHARDS}, got {n}")
    return (shard_hash(prompt_id) * n >> 64) + 1


def shard_range(i: int, n: int) -> tuple[int, int]:
    """The half-open range [lo, hi) of shard hashes that shard ``i`` of ``n`` owns."""
    return ((i - 1) * _SPACE + n - 1) // n, (i * _SPACE + n - 1) // n


def select_shard(prompts: Iterable[P], shard: tuple[int, int]) -> list[P]:
    """The prompts of ``shard`` (``(i, n)``), in their original order."""
    i, n = shard
    return [p for p in prompts if shard_of(p.prompt_id, n) == i]


def shard_filter(items: Iterable[Any], shard: tuple[int, int]) -> Iterator[Any]:
    """A prompt source's items for ``shard``, streamed: its prompt rows, and the bad rows in shard 1 only, so
    that merged shards record each bad row once."""
    i, n = shard
    for item in items:
        prompt_id = getattr(item, "prompt_id", None)
        if (shard_of(prompt_id, n) == i) if prompt_id is not None else i == 1:
            yield item


# -- merging ----------------------------------------------------------------------------------------------

_SKIP_TABLES = {"schema_migrations"}


def merge_shards(shards: Sequence[str | Path], into: str | Path) -> dict[str, dict[str, int]]:
    """Copy every row of each shard database into ``into`` (migrated first); returns new rows per shard and table.

    Each shard goes in as one transaction, so a failure leaves the target as it was before that shard. A shard
    from a newer rlaif (a migration the target lacks) is refused; one from an older rlaif is read by the columns
    it has. Tables without a primary key are refused: without one, a second merge would duplicate their rows.
    """
    from rlaif.store import Store, _quote, error_line

    target = Store(into)
    target.migrate()
    paths = [Path(s) for s in shards]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such shard database")
        if path.resolve() == target.path.resolve():
            raise ConfigError(f"{path}: a shard cannot be merged into itself")
    merged: dict[str, dict[str, int]] = {}
    import duckdb

    with target.connect() as con:
        tables = _keyed_tables(con)
        for path in paths:
            literal = str(path).replace("'", "''")
            try:
                con.execute(f"ATTACH '{literal}' AS shard (READ_ONLY)")
            except duckdb.Error as exc:
                raise StoreError(f"cannot open shard {path}: {error_line(exc)}") from None
            try:
                _check_versions(con, path)
                merged[str(path)] = _merge_one(con, tables, _quote)
            finally:
                con.execute("DETACH shard")
    return merged


def _keyed_tables(con) -> dict[str, list[str]]:
    """Base tables of the target (but schema_migrations) -> their columns; refuses a table with no key."""
    rows = con.execute(
        "SELECT table_name, list(column_name ORDER BY ordinal_position) FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name IN "
        "(SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
        "AND table_catalog = current_database()) GROUP BY table_name ORDER BY table_name"
    ).fetchall()
    keyed = {t for (t,) in con.execute(
        "SELECT DISTINCT table_name FROM duckdb_constraints() WHERE database_name = current_database() "
        "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE')"
    ).fetchall()}
    tables = {name: cols for name, cols in rows if name not in _SKIP_TABLES}
    unkeyed = sorted(set(tables) - keyed)
    if unkeyed:
        raise StoreError(f"table {unkeyed[0]} has no primary key, so merging shards could duplicate its rows")
    return tables


def _check_versions(con, path: Path) -> None:
    mine = {v for (v,) in con.execute("SELECT version FROM main.schema_migrations").fetchall()}
    try:
        theirs = {v for (v,) in con.execute("SELECT version FROM shard.schema_migrations").fetchall()}
    except Exception:
        raise StoreError(f"{path} is not an rlaif database (no schema_migrations table)") from None
    newer = sorted(theirs - mine)
    if newer:
        raise StoreError(f"shard {path} has migration {newer[-1]:03d}, which this rlaif does not know; upgrade rlaif")


def _merge_one(con, tables: dict[str, list[str]], quote) -> dict[str, int]:
    shard_columns: dict[str, set[str]] = {}
    for name, column in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_catalog = 'shard' "
        "AND table_schema = 'main'"
    ).fetchall():
        shard_columns.setdefault(name, set()).add(column)
    counts: dict[str, int] = {}
    con.execute("BEGIN TRANSACTION")
    try:
        for table, columns in tables.items():
            present = [c for c in columns if c in shard_columns.get(table, ())]
            if not present:
                continue
            cols = ", ".join(quote(c) for c in present)
            (n,) = con.execute(
                f"INSERT OR IGNORE INTO main.{quote(table)} ({cols}) SELECT {cols} FROM shard.{quote(table)}"
            ).fetchone()
            counts[table] = int(n)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return counts
