"""DuckDB storage: connect, migrate, idempotent batched writes and dataset export.

DuckDB allows one read-write process per file, and while a process holds the file no other process can open it,
not even read-only. So the generating process never keeps the file open: a ``Writer`` (``rlaif/writer.py``,
re-exported here) buffers rows in memory and flushes them in short transactions, each on a connection opened for
that flush and closed right after (tens of milliseconds). Between flushes the file is free, and ``rlaif sql`` in
another process opens it read-only; if it lands on a flush it retries with bounded backoff. docs/storage.md
explains the trade-offs.

Writes are idempotent because row keys are content hashes (storage/001_initial.sql): ``INSERT OR IGNORE`` makes a
rerun, or Prefect re-running a task after a crash (at-least-once), store each row once.

``RLAIF_DB=ducklake:...`` names a lake instead of a file (``rlaif/lake.py``): many processes on many machines write
at once, each write a transaction with an anti-join for the keys, retried when it loses a commit race.

This module imports duckdb when loaded (~0.2 s); pyarrow is imported inside the functions that build frames. The
CLI should import it inside the commands that touch the database, so ``rlaif --help`` stays fast.
"""

from __future__ import annotations

import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb

from rlaif import lake
from rlaif.engines.base import one_line
from rlaif.errors import ConfigError, StoreError
from rlaif.resources import data_dir
from rlaif.writer import Writer  # noqa: F401  (re-exported: callers import it from here, beside Store)

if TYPE_CHECKING:
    import pyarrow as pa

    from rlaif.config import Settings

OnLocked = Literal["wait", "fail"]

_MIGRATION_RE = re.compile(r"^(\d{3})_([A-Za-z0-9_]+)\.sql$")
_MIGRATIONS_DDL = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL
)"""
_FRAME = "_rlaif_frame"  # name under which an Arrow frame is registered for one statement
_CHUNK_ROWS = 2048  # rows per INSERT statement
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.01, 0.25  # lock retries: start fast, never sleep long (readers get in)
# The longest normal turn at the file (flushes: 35-200 ms at a light load; the longest wait for a turn with two
# writers and a reader at a load of 15 on 2 cores: 4.5 s). Held longer, the file is "held": a run says so, then
# waits (on_locked=wait) or stops (on_locked=fail). docs/storage.md, "Two runs at once".
TURN_S = 5.0
# Columns of `runs` that change after a run starts; the rest is fixed at the first insert.
_RUN_UPDATES = {
    "status": "excluded.status",
    "finished_at": "excluded.finished_at",
    "error": "excluded.error",
    "prefect_flow_run_id": "coalesce(excluded.prefect_flow_run_id, runs.prefect_flow_run_id)",
}


def utcnow() -> datetime:
    """The timestamp convention of every table: naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def error_line(exc: BaseException) -> str:
    """An exception as one line (``rlaif.engines.base.one_line``), its type when it has no message."""
    return one_line(str(exc).strip() or type(exc).__name__)


def _is_lock_conflict(exc: duckdb.Error) -> bool:
    """Another process holds the file, or this process holds it with another configuration (read-only vs not)."""
    text = str(exc)
    return "Could not set lock" in text or "different configuration" in text


def _holder(exc: duckdb.Error) -> str:
    pid = re.search(r"PID (\d+)", str(exc))
    return f"another process (pid {pid.group(1)})" if pid else "another connection in this process"


def _lock_message(path: Path, exc: duckdb.Error, waited_s: float, on_locked: OnLocked = "wait") -> str:
    advice = ("on_locked=fail, so this stops here (on_locked=wait waits up to lock_wait_s)" if on_locked == "fail"
              else "wait for it to finish or stop it, then retry")
    return f"database {path} is locked by {_holder(exc)} for over {waited_s:g}s; {advice}"


@dataclass
class LockStats:
    """How opens of one ``Store`` fared against other holders of the file (benchmarks and run summaries)."""

    opens: int = 0
    waited: int = 0  # opens that found the file held at least once
    wait_s: float = 0.0  # time spent waiting, all opens together
    max_wait_s: float = 0.0
    held_s: float = 0.0  # time this Store held the file open, all connections together
    conflicts: int = 0  # lake writes that lost a commit race to another writer (each retried)
    commits: int = 0  # lake write transactions committed


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Store:
    """One DuckDB file. Holds no connection: every method opens one, uses it briefly and closes it.

    Other processes take turns at the file (docs/storage.md): an open that finds it held retries with bounded,
    jittered backoff. Held past ``turn_s``, the file is "held", not merely busy: with ``on_locked="wait"`` one
    line goes to ``notice`` (stderr by default) and the open keeps trying until ``lock_timeout_s``; with
    ``on_locked="fail"`` it gives up then. Either way the give-up is a one-line ``StoreError``.
    """

    def __init__(self, path: str | Path, *, lock_timeout_s: float = 30.0, on_locked: OnLocked = "wait",
                 notice: Callable[[str], None] | None = None, turn_s: float = TURN_S,
                 data_path: str | Path | None = None):
        if on_locked not in ("wait", "fail"):
            raise ConfigError(f"on_locked must be wait or fail, got {on_locked!r}")
        self.lake = lake.Lake.parse(path, data_path) if lake.is_lake(path) else None
        self.path = Path(path)
        self.lock_timeout_s, self.turn_s = lock_timeout_s, turn_s
        self.on_locked: OnLocked = on_locked
        self.notice = notice or (lambda line: print(line, file=sys.stderr, flush=True))
        self.stats = LockStats()
        self._stats_lock = threading.Lock()
        self._local = threading.local()  # the last hold time of each thread (the Writer paces itself by it)
        self._schemas: dict[str, pa.Schema] = {}  # table -> Arrow schema, so empty lists/all-None infer right
        # A lake's DuckDB instances (read-only, read-write), kept: loading the extensions costs ~0.7 s, so each
        # connection is a cursor on one of them. A local catalog is attached only while in use (users counts).
        self._lake_lock = threading.Lock()
        self._lake_dbs: dict[bool, duckdb.DuckDBPyConnection] = {}
        self._lake_users: dict[bool, int] = {True: 0, False: 0}

    @classmethod
    def from_settings(cls, settings: Settings) -> Store:
        """The project database of ``settings``, with its lock policy (``lock_wait_s``, ``on_locked``)."""
        return cls(settings.db, lock_timeout_s=settings.lock_wait_s, on_locked=settings.on_locked,
                   data_path=settings.lake_data_path)

    @property
    def last_hold_s(self) -> float:
        """How long the calling thread's last connection held the file (open to close), in seconds."""
        return getattr(self._local, "held_s", 0.0)

    @contextmanager
    def connect(
        self, *, read_only: bool = False, config: dict[str, Any] | None = None
    ) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open the file (waiting out other holders per the lock policy), yield the connection, close it."""
        con = self._open(read_only, config or {})
        opened = time.monotonic()
        try:
            yield con
        finally:
            con.close()
            if self.lake is not None and not config:
                from rlaif import lake_store

                lake_store.release(self, read_only)
            held = time.monotonic() - opened
            self._local.held_s = held
            with self._stats_lock:
                self.stats.held_s += held

    def _open(self, read_only: bool, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
        local = self.path if self.lake is None else self.lake.local_path if self.lake.is_local else None
        if read_only and local is not None and not local.is_file():
            raise StoreError(f"no database at {self.path}; run `rlaif demo` or a flow first")
        if not read_only and local is not None:
            local.parent.mkdir(parents=True, exist_ok=True)
        bound = self.lock_timeout_s if self.on_locked == "wait" else min(self.lock_timeout_s, self.turn_s)
        start = time.monotonic()
        delay = _BACKOFF_FIRST_S
        conflicted = noticed = False
        while True:  # bounded by `bound`; each sleep is at least half of _BACKOFF_FIRST_S
            try:
                con = (duckdb.connect(str(self.path), read_only=read_only, config=config) if self.lake is None
                       else self._lake_connect(read_only, config))
            except duckdb.Error as exc:
                if not (_is_lock_conflict(exc) or lake.is_init_race(exc)):
                    raise StoreError(f"cannot open database {self.path}: {error_line(exc)}") from None
                conflicted = True
                waited = time.monotonic() - start
                if waited >= bound:
                    self._count_open(waited, conflicted)
                    raise StoreError(_lock_message(self.path, exc, bound, self.on_locked)) from None
                if waited >= self.turn_s and not noticed:  # once per open: held past a normal turn
                    noticed = True
                    self.notice(f"rlaif: database {self.path} is held by {_holder(exc)}; waiting up to "
                                f"{bound:g}s in all for it (on_locked=wait)")
                # Jitter keeps a reader from landing on every periodic flush of a writer.
                time.sleep(min(bound - waited, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, _BACKOFF_MAX_S)
            else:
                self._count_open(time.monotonic() - start, conflicted)
                return con

    def _lake_connect(self, read_only: bool, config: dict[str, Any]) -> duckdb.DuckDBPyConnection:
        from rlaif import lake_store  # the lake's code loads only for a lake

        return lake_store.attach_alone(self, read_only, config) if config else lake_store.cursor(self, read_only)

    def _count_open(self, waited_s: float, conflicted: bool) -> None:
        with self._stats_lock:
            self.stats.opens += 1
            if conflicted:
                self.stats.waited += 1
                self.stats.wait_s += waited_s
                self.stats.max_wait_s = max(self.stats.max_wait_s, waited_s)

    # -- schema -------------------------------------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply the storage/NNN_*.sql files not yet recorded in ``schema_migrations``, in order.

        Each file runs in its own transaction together with its bookkeeping row, so a failing migration leaves
        the database as it was before that file. Returns the names applied now (empty when up to date).
        """
        if self.lake is not None:
            from rlaif import lake_store

            return lake_store.migrate(self)
        files = _migration_files()
        applied_now: list[str] = []
        with self.connect() as con:
            con.execute(_MIGRATIONS_DDL)
            done = {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}
            unknown = sorted(done - {v for v, _, _ in files})
            if unknown:
                raise StoreError(
                    f"database {self.path} has migration {unknown[-1]:03d}, which this rlaif does not know; "
                    "upgrade rlaif"
                )
            for version, name, path in files:
                if version not in done:
                    _apply_migration(con, version, name, path)
                    applied_now.append(name)
        self._schemas.clear()
        return applied_now

    def _schema(self, con: duckdb.DuckDBPyConnection, table: str) -> pa.Schema:
        """The table's columns as an Arrow schema, read from DuckDB itself and cached per table."""
        if table not in self._schemas:
            tables = {t for (t,) in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_catalog = current_database()"
            ).fetchall()}
            if table not in tables:
                hint = "run `rlaif demo` or a flow first" if not tables else "tables: " + ", ".join(sorted(tables))
                raise StoreError(f"no table {table!r} in {self.path}; {hint}")
            self._schemas[table] = con.sql(f"SELECT * FROM {_quote(table)} LIMIT 0").to_arrow_table().schema
        return self._schemas[table]

    def _frame(self, con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> pa.Table:
        """Rows (plain dicts) -> an Arrow table typed like ``table``; missing keys become NULL."""
        import pyarrow as pa

        schema = self._schema(con, table)
        extra = sorted({k for row in rows for k in row} - set(schema.names))
        if extra:
            raise StoreError(f"table {table} has no column {extra[0]!r}; columns: {', '.join(schema.names)}")
        arrays = []
        for field in schema:  # column by column, so a bad value names its column
            values = [row.get(field.name) for row in rows]
            try:
                if _is_list_of_structs(field.type):
                    arrays.append(_list_of_structs(values, field.type))
                else:
                    arrays.append(pa.array(values, type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, AttributeError, TypeError) as exc:
                raise StoreError(f"{table}.{field.name}: cannot store as {field.type}: {error_line(exc)}") from exc
        return pa.Table.from_arrays(arrays, schema=schema)

    # -- writes -------------------------------------------------------------------------------------------

    def _insert(self, con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> int:
        """Insert in statements of at most ``_CHUNK_ROWS`` rows: one transaction still, but the Arrow frame and
        DuckDB's working memory stay bounded however many rows a flush holds."""
        count = 0
        for start in range(0, len(rows), _CHUNK_ROWS):
            chunk = rows[start : start + _CHUNK_ROWS]
            con.register(_FRAME, self._frame(con, table, chunk))  # replaces the previous frame
            try:
                (new,) = con.execute(f"INSERT OR IGNORE INTO {_quote(table)} BY NAME SELECT * FROM {_FRAME}").fetchone()
            except duckdb.ConstraintException as exc:
                raise StoreError(f"cannot write {len(rows)} rows to {table}: {error_line(exc)}") from exc
            count += int(new)
        if rows:
            con.unregister(_FRAME)
        return count

    def insert(self, table: str, rows: list[dict]) -> int:
        """Insert rows in one short transaction, skipping keys already stored; returns how many were new."""
        return self.write({table: rows})[table]

    def write(self, batches: dict[str, list[dict]], *, memory_limit_mb: int | None = None) -> dict[str, int]:
        """Insert into several tables in ONE transaction: all batches are stored, or none is.

        Returns the number of new rows per table (rows whose key was already stored are skipped).
        ``memory_limit_mb`` caps DuckDB's memory for this write (see ``Writer``).
        """
        counts: dict[str, int] = {table: 0 for table in batches}
        if not any(batches.values()):
            return counts
        if self.lake is not None:
            from rlaif import lake_store

            return {**counts, **lake_store.write(self, batches, memory_limit_mb)}
        with self.connect() as con:
            if memory_limit_mb is not None:
                con.execute(f"SET memory_limit = '{int(memory_limit_mb)}MB'")
            con.execute("BEGIN TRANSACTION")
            try:
                for table, rows in batches.items():
                    counts[table] = self._insert(con, table, rows)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        return counts

    def upsert_run(self, row: dict) -> None:
        """Record a run, or update its status, finished_at, error and Prefect id when it is already stored.

        A new run needs the whole row (kind and started_at are NOT NULL); an update may pass only ``run_id`` and
        the columns that change. Columns left out keep their stored values, and so does a Prefect id of None.
        """
        changes = ", ".join(f"{col} = {expr}" for col, expr in _RUN_UPDATES.items() if col in row)
        if self.lake is not None:
            from rlaif import lake_store

            return lake_store.upsert_run(self, row, changes)
        action = f"UPDATE SET {changes}" if changes else "NOTHING"
        with self.connect() as con:
            con.register(_FRAME, self._frame(con, "runs", [row]))
            try:
                con.execute(f"INSERT INTO runs BY NAME SELECT * FROM {_FRAME} ON CONFLICT (run_id) DO {action}")
            except duckdb.ConstraintException as exc:
                raise StoreError(f"cannot record run {row.get('run_id')!r}: {error_line(exc)}") from exc

    # -- the writer process's own reads -------------------------------------------------------------------

    def fetch(self, sql: str, params: Sequence | dict = ()) -> list[dict]:
        """Run one query on a short read-write-capable connection and return its rows as dicts."""
        with self.connect() as con:
            cur = con.execute(sql, params) if params else con.execute(sql)
            names = [d[0] for d in cur.description or ()]
            return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]

    def existing(self, table: str, column: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are already stored in ``table.column``: one join against a registered frame."""
        import pyarrow as pa

        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return set()
        with self.connect() as con:
            if column not in self._schema(con, table).names:
                raise StoreError(f"table {table} has no column {column!r}")
            con.register(_FRAME, pa.table({"k": pa.array(wanted, type=pa.string())}))
            found = con.execute(
                f"SELECT DISTINCT f.k FROM {_FRAME} f JOIN {_quote(table)} t ON t.{_quote(column)} = f.k"
            ).fetchall()
        return {k for (k,) in found}


def _is_list_of_structs(arrow_type: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_list(arrow_type) and pa.types.is_struct(arrow_type.value_type)


def _list_of_structs(values: list, arrow_type: Any) -> Any:
    """A ``STRUCT(...)[]`` column (``messages``) built field by field: ~5x faster than ``pa.array`` on a list of
    lists of dicts, which matters because every chat row holds its whole conversation, exemplars included."""
    import pyarrow as pa

    fields = list(arrow_type.value_type)
    columns: list[list] = [[] for _ in fields]
    offsets, nulls = [0], []
    for value in values:
        nulls.append(value is None)
        if value is not None:
            for column, f in zip(columns, fields):
                column.extend([item.get(f.name) for item in value])
            offsets.append(offsets[-1] + len(value))
        else:
            offsets.append(offsets[-1])
    struct = pa.StructArray.from_arrays([pa.array(c, type=f.type) for c, f in zip(columns, fields)], fields=fields)
    mask = pa.array(nulls, type=pa.bool_()) if any(nulls) else None
    return pa.ListArray.from_arrays(pa.array(offsets, type=pa.int32()), struct, type=arrow_type, mask=mask)


def _migration_files() -> list[tuple[int, str, Path]]:
    """(version, name, path) of every storage/NNN_name.sql, in version order; other files there are ignored."""
    found: list[tuple[int, str, Path]] = []
    for path in sorted(data_dir("storage").glob("*.sql")):
        match = _MIGRATION_RE.match(path.name)
        if match:
            found.append((int(match.group(1)), path.stem, path))
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migrations share a number in {data_dir('storage')}: {versions}")
    return found


def _apply_migration(con: duckdb.DuckDBPyConnection, version: int, name: str, path: Path) -> None:
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(path.read_text(encoding="utf-8"))
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, utcnow()])
        con.execute("COMMIT")
    except duckdb.Error as exc:
        con.execute("ROLLBACK")
        raise StoreError(f"migration {path.name} failed: {error_line(exc)}") from exc


# -- dataset export -------------------------------------------------------------------------------------------


def export_dataset(db: str | Path, dataset: Literal["sft", "prefs"], out: str | Path) -> int:
    """Write a dataset in the raw format (storage/export_<dataset>.sql) to ``out``; returns its rows.

    Kept for callers from before ``rlaif.exports``, which has the TRL formats, filters and the dataset card.
    """
    from rlaif.exports.formats import write_export

    return write_export(db, dataset, "raw", out).rows
