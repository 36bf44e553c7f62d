"""The lake side of ``rlaif.store.Store``: attaching a DuckLake, migrating it, and writes that stay keyed and
correct with many writers at once (``rlaif/lake.py`` says how). ``Store`` calls these when its database is a
``ducklake:`` one; the file store never imports this module.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import duckdb

from rlaif import lake
from rlaif.errors import StoreError
from rlaif.store import (
    _BACKOFF_FIRST_S,
    _BACKOFF_MAX_S,
    _CHUNK_ROWS,
    _FRAME,
    _MIGRATIONS_DDL,
    _is_lock_conflict,
    _migration_files,
    _quote,
    error_line,
    utcnow,
)

if TYPE_CHECKING:
    from rlaif.store import Store

# A write that loses a commit race to another writer is retried whole, at most this many times and never past
# the store's lock_timeout_s: with n writers committing at once, a write loses at most n - 1 races in a row.
MAX_RETRIES = 50
MIGRATE_S = 300.0  # a migration's budget: each try is seconds of DDL round trips to the catalog
# Settings a sandbox connection can only take after the lake is attached (attaching reads files).
_LATE_SETTINGS = ("enable_external_access", "lock_configuration")


def _retryable(exc: duckdb.Error) -> bool:
    return _is_lock_conflict(exc) or lake.is_init_race(exc)


def cursor(store: Store, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A connection on the store's DuckDB instance for the lake, attaching the lake if it is not attached."""
    assert store.lake is not None
    with store._lake_lock:
        db = store._lake_dbs.get(read_only)
        if db is None:
            db = store._lake_dbs[read_only] = duckdb.connect()
            lake.load_extensions(db, store.lake)
        if not store._lake_users[read_only] and not _attached(db):
            try:
                db.execute(store.lake.attach_sql(read_only))
            except duckdb.Error as exc:
                if _retryable(exc):
                    raise
                raise StoreError(f"cannot open lake {store.path}: {error_line(exc)}") from None
        store._lake_users[read_only] += 1
    cur = db.cursor()
    cur.execute(f"USE {lake.ALIAS}")
    return cur


def release(store: Store, read_only: bool) -> None:
    """A connection from ``cursor`` closed: a local catalog file is detached when nobody uses it, so other
    processes can open it (the file store's turns); a PostgreSQL catalog stays attached."""
    assert store.lake is not None
    with store._lake_lock:
        store._lake_users[read_only] -= 1
        if not store._lake_users[read_only] and store.lake.is_local:
            store._lake_dbs[read_only].execute(f"DETACH {lake.ALIAS}")


def attach_alone(store: Store, read_only: bool, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB of its own with the lake attached as its default database (a sandbox's).

    Settings that would stop the attach itself (no file access) are applied after it, with the lake's data
    path as the one folder left readable, so a sandbox reads the lake's Parquet files and nothing else.
    """
    assert store.lake is not None
    con = duckdb.connect(config={k: v for k, v in config.items() if k not in _LATE_SETTINGS})
    try:
        lake.load_extensions(con, store.lake)
        con.execute(store.lake.attach_sql(read_only))
        con.execute(f"USE {lake.ALIAS}")
        if config.get("enable_external_access") is False:
            con.execute("SET allowed_directories = ?", [[lake.data_path(con)]])
        for key in _LATE_SETTINGS:
            if key in config:
                con.execute(f"SET {key} = {str(config[key]).lower()}")
    except duckdb.Error as exc:
        con.close()
        if _retryable(exc):
            raise
        raise StoreError(f"cannot open lake {store.path}: {error_line(exc)}") from None
    except BaseException:
        con.close()
        raise
    return con


def transaction(store: Store, body: Callable[[duckdb.DuckDBPyConnection], Any], *, fence: bool = True,
                budget_s: float | None = None) -> Any:
    """Run ``body`` in one lake transaction that also bumps the fence, retried whole when the commit loses to
    another writer's: at most ``MAX_RETRIES`` times and never past ``budget_s`` (the store's lock_timeout_s)."""
    budget = store.lock_timeout_s if budget_s is None else budget_s
    start, delay, losses = time.monotonic(), _BACKOFF_FIRST_S, 0
    while True:  # bounded: MAX_RETRIES losses, `budget` seconds in all
        with store.connect() as con:
            con.execute("BEGIN TRANSACTION")
            try:
                result = body(con)
                if fence:
                    con.execute(lake.FENCE_SQL)
                con.execute("COMMIT")
            except duckdb.Error as exc:
                _rollback(con)
                if not lake.is_conflict(exc):
                    raise
                conflict = exc
            except BaseException:
                _rollback(con)
                raise
            else:
                with store._stats_lock:
                    store.stats.commits += 1
                return result
        with store._stats_lock:
            store.stats.conflicts += 1
        losses += 1
        waited = time.monotonic() - start
        if waited >= budget or losses > MAX_RETRIES:
            raise StoreError(f"lake {store.path}: a write lost {losses} commit races to other writers in "
                             f"{waited:.1f}s; giving up ({error_line(conflict)})")
        time.sleep(min(budget - waited, delay * random.uniform(0.5, 1.0)))  # jitter: losers spread out
        delay = min(delay * 2, _BACKOFF_MAX_S * 4)


def write(store: Store, batches: dict[str, list[dict]], memory_limit_mb: int | None) -> dict[str, int]:
    """``Store.write`` on a lake: every table's keyed insert in one fenced transaction.

    The rows are typed into Arrow frames first, on a connection of their own and once for every retry: reading
    the tables' schemas inside the transaction would only widen the window in which another commit can win.
    """
    with store.connect() as con:
        frames = {table: [store._frame(con, table, rows[i : i + _CHUNK_ROWS]) for i in range(0, len(rows), _CHUNK_ROWS)]
                  for table, rows in batches.items() if rows}

    def body(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
        if memory_limit_mb is not None:
            con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
        counts = {}
        for table, chunks in frames.items():
            statement, counts[table] = lake.insert_sql(table, _FRAME, _quote), 0
            for frame in chunks:
                con.register(_FRAME, frame)
                try:
                    (new,) = con.execute(statement).fetchone()
                except duckdb.ConstraintException as exc:
                    raise StoreError(f"cannot write {len(batches[table])} rows to {table}: {error_line(exc)}") from exc
                counts[table] += int(new)
            con.unregister(_FRAME)
        return counts

    return transaction(store, body)


def upsert_run(store: Store, row: dict, changes: str) -> None:
    """``Store.upsert_run`` on a lake: an UPDATE when the run is stored, else the keyed insert (no ON CONFLICT)."""
    with store.connect() as con:
        frame = store._frame(con, "runs", [row])

    def body(con: duckdb.DuckDBPyConnection) -> None:
        con.register(_FRAME, frame)
        try:
            (stored,) = con.execute("SELECT count(*) FROM runs WHERE run_id = ?", [row.get("run_id")]).fetchone()
            if not stored:
                con.execute(lake.insert_sql("runs", _FRAME, _quote))
            elif changes:
                con.execute(f"UPDATE runs SET {changes.replace('excluded.', 'excluded_.')} FROM {_FRAME} "
                            "AS excluded_ WHERE runs.run_id = excluded_.run_id")
        except duckdb.ConstraintException as exc:
            raise StoreError(f"cannot record run {row.get('run_id')!r}: {error_line(exc)}") from exc
        finally:
            con.unregister(_FRAME)

    transaction(store, body)


def migrate(store: Store) -> list[str]:
    """``Store.migrate`` on a lake: the same files without their key clauses, all pending ones in one transaction.

    Writers starting together all migrate: two that create the same table conflict, and the loser retries,
    finds the files recorded and goes on. One transaction, not one per file, because each DDL statement is a
    round trip to the catalog and every file would be another commit to lose; a lake already up to date
    commits nothing.
    """
    files = _migration_files()

    def apply_pending(con: duckdb.DuckDBPyConnection) -> list[str]:
        for statement in lake.bootstrap_sql(_MIGRATIONS_DDL):
            con.execute(statement)
        done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
        unknown = sorted(done - {v for v, _, _ in files})
        if unknown:
            raise StoreError(f"lake {store.path} has migration {unknown[-1]:03d}, which this rlaif does not know; "
                             "upgrade rlaif")
        if not con.execute(f"SELECT count(*) FROM {lake.FENCE_TABLE}").fetchone()[0]:
            con.execute(f"INSERT INTO {lake.FENCE_TABLE} VALUES (0)")
        applied = []
        for version, name, path in files:
            if version in done:
                continue
            try:
                con.execute(lake.lake_ddl(path.read_text(encoding="utf-8")))
            except duckdb.Error as exc:
                if lake.is_conflict(exc):
                    raise
                raise StoreError(f"migration {path.name} failed on the lake: {error_line(exc)}") from exc
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, utcnow()])
            applied.append(name)
        if applied:
            con.execute(lake.FENCE_SQL)
        return applied

    return transaction(store, apply_pending, fence=False, budget_s=max(store.lock_timeout_s, MIGRATE_S))


def _attached(db: duckdb.DuckDBPyConnection) -> bool:
    query = "SELECT count(*) FROM duckdb_databases() WHERE database_name = ?"
    return bool(db.execute(query, [lake.ALIAS]).fetchone()[0])


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back, ignoring the error of a transaction that a failed COMMIT already ended."""
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass
