"""DuckLake as the store: many writers on many machines committing into one dataset, no merge step.

A ``ducklake:`` database (``RLAIF_DB=ducklake:postgres:dbname=lake host=db``, or ``ducklake:PATH`` for a local
catalog file) keeps its catalog in PostgreSQL (or a DuckDB file) and its rows in Parquet files under a data path.
DuckDB attaches it and queries it as it does a file, so every view, export and ``rlaif sql`` query runs unchanged.

What DuckLake lacks is what the file store's writes rest on: primary keys and ``INSERT OR IGNORE``. So:

- **Keys** come from the file store's own migrations: they are applied to an in-memory DuckDB and its primary-key
  constraints are read back (``table_keys``); the lake's DDL is the same SQL with the key clauses taken out
  (``lake_ddl``). One set of migrations, one source of truth for what a row's key is.
- **Dedup** is an anti-join inside the writer's transaction (``insert_sql``): rows whose key is stored, or that
  repeat a key within the batch, are left out.
- **Concurrent writers.** DuckLake lets two transactions that only insert into a table both commit; two writers
  anti-joining against the same snapshot would then both store a key. Every write transaction therefore also
  bumps the one row of ``lake_commits`` (``FENCE_SQL``): two transactions that both delete from the same data
  file conflict, so of two overlapping writes one commits and the other fails, and its writer retries the whole
  transaction against the new snapshot (``rlaif.store.Store``: bounded in count and in time). That is optimistic
  concurrency on the whole lake: correct whatever the tables, at the price of a retry when commits overlap.

The extensions load from the PyPI wheels ``duckdb-extension-ducklake`` and ``duckdb-extension-postgres`` (no
download at run time). docs/storage.md, "The lake", says why they pin DuckDB 1.5.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError, StoreError

PREFIX = "ducklake:"
ALIAS = "rlaif"  # the lake's name inside each connection (USE rlaif makes its tables the default)
FENCE_TABLE = "lake_commits"
FENCE_SQL = f"UPDATE {FENCE_TABLE} SET commits = commits + 1"
_FENCE_DDL = f"CREATE TABLE IF NOT EXISTS {FENCE_TABLE} (commits BIGINT NOT NULL)"
# (wheel module, file name in the wheel, name it loads under)
_DUCKLAKE = ("duckdb_extension_ducklake", "ducklake", "ducklake")
_POSTGRES = ("duckdb_extension_postgres", "postgres", "postgres_scanner")
_INLINE_KEY = re.compile(r"\s+PRIMARY\s+KEY(?=\s*(,|--|\n|\)))", re.I)
_TABLE_KEY = re.compile(r",([ \t]*--[^\n]*)?\s*\n\s*PRIMARY\s+KEY\s*\([^)]*\)", re.I)


def is_lake(db: str | Path) -> bool:
    return str(db).startswith(PREFIX)


@dataclass(frozen=True)
class Lake:
    """One lake: its catalog (``postgres:<libpq dsn>`` or a catalog file path) and, optionally, its data path.

    The data path is stored in the catalog when the lake is created, so only the first writer needs it; a
    later ``data_path`` must name the same place.
    """

    catalog: str
    data_path: str | None = None

    @classmethod
    def parse(cls, db: str | Path, data_path: str | Path | None = None) -> Lake:
        catalog = str(db)[len(PREFIX):].strip()
        if not catalog or catalog == "postgres:" or re.match(r"^[a-z]+:", catalog) and not catalog.startswith(
                "postgres:"):
            raise ConfigError(f"RLAIF_DB={db!s}: expected ducklake:postgres:<libpq dsn> or ducklake:<catalog file>")
        return cls(catalog, str(data_path) if data_path else None)

    @property
    def is_local(self) -> bool:
        """A DuckDB catalog file: one process at a time holds it (the file store's rule); PostgreSQL: many."""
        return not self.catalog.startswith("postgres:")

    @property
    def local_path(self) -> Path:
        return Path(self.catalog).expanduser()

    def __str__(self) -> str:
        return PREFIX + self.catalog

    def attach_sql(self, read_only: bool) -> str:
        options = []
        if self.data_path:
            options.append(f"DATA_PATH {_literal(self.data_path)}")
        if read_only:
            options.append("READ_ONLY")
        target = str(self.local_path) if self.is_local else self.catalog
        tail = f" ({', '.join(options)})" if options else ""
        return f"ATTACH {_literal(PREFIX + target)} AS {ALIAS}{tail}"

    def extensions(self) -> list[tuple[str, str, str]]:
        """(wheel module, file, name) of each extension this lake needs, in load order."""
        needed = [_DUCKLAKE]
        if not self.is_local:
            needed.insert(0, _POSTGRES)
        return needed


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@cache
def extension_file(module: str, name: str) -> str:
    """The ``.duckdb_extension`` file inside an installed extension wheel, for this DuckDB's version."""
    import duckdb

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise StoreError(f"a ducklake: database needs the {module.replace('_', '-')} package, one of rlaif's "
                         "dependencies: reinstall rlaif (./setup.sh)")
    root = Path(spec.submodule_search_locations[0]) / "extensions"
    wanted = root / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if not wanted.is_file():
        built = sorted(p.name for p in root.glob("v*")) or ["none"]
        raise StoreError(f"{module.replace('_', '-')} is built for DuckDB {', '.join(built)}, this is DuckDB "
                         f"{duckdb.__version__}; install the matching versions (docs/storage.md, 'The lake')")
    return str(wanted)


# DuckLake's own commit retries (a lost race for the next snapshot id) start at 100 ms and grow by 1.5 ten times,
# ~11 s before a real conflict even reaches the writer; the writer retries whole transactions itself, so DuckLake
# is asked to settle its races in about a second instead.
_RETRY_SETTINGS = {"ducklake_retry_wait_ms": 10, "ducklake_retry_backoff": 1.5, "ducklake_max_retry_count": 10}


def load_extensions(con: Any, lake: Lake) -> None:
    """INSTALL each extension from its wheel's file (no network), then LOAD it by name."""
    for module, file, name in lake.extensions():
        con.execute(f"INSTALL {_literal(extension_file(module, file))}")
        con.execute(f"LOAD {name}")
    for key, value in _RETRY_SETTINGS.items():
        con.execute(f"SET {key} = {value}")


def data_path(con: Any) -> str:
    """The data path the attached lake stores its files under (recorded in its catalog at creation)."""
    (path,) = con.execute(
        f"SELECT value FROM __ducklake_metadata_{ALIAS}.ducklake_metadata WHERE key = 'data_path'"
    ).fetchone()
    return path


def lake_ddl(sql: str) -> str:
    """A migration's SQL without its primary-key clauses (DuckLake has no keys); a key column stays NOT NULL, as
    the key made it in the file store, and everything else is kept."""
    return _TABLE_KEY.sub("", _INLINE_KEY.sub(" NOT NULL", sql))


def bootstrap_sql(migrations_ddl: str) -> list[str]:
    """The statements that make a lake usable before its first migration: the bookkeeping and fence tables."""
    return [lake_ddl(migrations_ddl), _FENCE_DDL]


@cache
def table_keys() -> dict[str, tuple[str, ...]]:
    """Each table's primary-key columns, read from the file store's migrations applied to an in-memory DuckDB."""
    import duckdb

    from rlaif.store import _MIGRATIONS_DDL, _migration_files

    con = duckdb.connect()
    try:
        con.execute(_MIGRATIONS_DDL)
        for _, _, path in _migration_files():
            con.execute(path.read_text(encoding="utf-8"))
        rows = con.execute(
            "SELECT table_name, constraint_column_names FROM duckdb_constraints() "
            "WHERE constraint_type = 'PRIMARY KEY'"
        ).fetchall()
    finally:
        con.close()
    return {table: tuple(columns) for table, columns in rows}


def insert_sql(table: str, frame: str, quote: Any) -> str:
    """An INSERT that stores each row of ``frame`` whose key is new: the lake's ``INSERT OR IGNORE``."""
    keys = table_keys().get(table)
    if not keys:
        raise StoreError(f"table {table} has no key, so writes to it could not be deduplicated on a lake")
    cols = ", ".join(quote(k) for k in keys)
    match = " AND ".join(f"t.{quote(k)} = f.{quote(k)}" for k in keys)
    return (f"INSERT INTO {quote(table)} BY NAME SELECT * EXCLUDE (_rlaif_n) FROM ("
            f"SELECT *, row_number() OVER (PARTITION BY {cols}) AS _rlaif_n FROM {frame}) f "
            f"WHERE f._rlaif_n = 1 AND NOT EXISTS (SELECT 1 FROM {quote(table)} t WHERE {match})")


def is_init_race(exc: BaseException) -> bool:
    """Two processes attached a new lake at once and both created its catalog tables: the loser attaches again.
    (DuckLake initialises an empty catalog on attach, and does not guard that against a concurrent attach.)"""
    text = str(exc)
    return "Failed to initialize DuckLake" in text and ("duplicate" in text or "already exists" in text)


def is_conflict(exc: BaseException) -> bool:
    """A commit that lost to another writer's (retry it), not an error in what was written."""
    text = str(exc)
    return "Transaction conflict" in text or "Failed to commit DuckLake transaction" in text or (
        "conflict" in text.lower() and "TransactionContext" in text)
