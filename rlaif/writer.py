"""The buffered writer: rows go to memory first and reach DuckDB in short, paced, all-or-nothing flushes.

Why buffer at all: DuckDB lets one process hold a file, and no other process can open it meanwhile, not even
read-only. So a run never keeps the file open; a ``Writer`` gathers rows and hands them to ``Store.write`` now and
then, each flush on a connection opened for it and closed right after, and other processes (``rlaif sql``, a second
run) take their turns in between (docs/storage.md). ``rlaif.store`` re-exports ``Writer``.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

import duckdb

if TYPE_CHECKING:
    from rlaif.store import Store

_MEMORY_LIMIT_MAX_MB = 64 * 1024  # a Writer's memory cap doubles on out-of-memory up to this


def _warm_arrow() -> None:
    """Pay Arrow's one-time start-up now: its first conversion of Python values imports pandas (~0.25 s). Inside
    a Writer's first flush that time would count as holding the file, and pacing would pause the next flush for
    it (up to ``max_age_s``) while rows pile up."""
    import pyarrow as pa

    pa.array([""], type=pa.string())


class Writer:
    """Buffers rows per table and flushes them together in one transaction.

    A flush is due when ``max_rows`` rows are buffered, or when ``max_age_s`` has passed since the first buffered
    row (checked on ``add``); ``flush()`` and ``close()`` always flush. Between flushes the file is closed, so
    readers in other processes get in. Thread-safe: an asyncio flow may call ``add`` from callbacks or threads.

    With ``background=True`` a due flush runs on one writer thread of its own instead of the caller's. An asyncio
    run wants this: a flush (open, insert, commit, close) takes tens of milliseconds, and on the event-loop thread
    that is time in which no finished request can start the next one. Rows added meanwhile wait for the next
    flush; only one flush runs at a time, so DuckDB never sees two writers from this process.

    A failed flush (e.g. the lock timeout) never drops rows: they go back into the buffer. A synchronous flush
    raises; a background one keeps the error, the next due flush tries again, and ``flush()``/``close()`` raise
    if the rows still cannot be written.

    Flushes are paced so that readers and other writers get turns: after a flush that held the file ``h``
    seconds, the next due flush waits ``min(h * (1 / max_busy - 1), max_age_s)`` and takes everything buffered
    meanwhile. Cheap flushes keep this writer under ``max_busy`` of the time; a long one pauses at most
    ``max_age_s``, so the writer is never held below its own row rate (docs/storage.md, "Two runs at once").
    ``flush()`` and ``close()`` are not paced.
    """

    def __init__(self, store: Store, *, max_rows: int = 256, max_age_s: float = 1.0, background: bool = False,
                 max_busy: float = 0.2, memory_limit_mb: int | None = None):
        if not 0 < max_busy <= 1:
            raise ValueError(f"max_busy must be in (0, 1], got {max_busy}")
        self.store, self.max_rows, self.max_age_s, self.max_busy = store, max_rows, max_age_s, max_busy
        self.memory_limit_mb = memory_limit_mb  # DuckDB's cap during flushes; None: DuckDB's default
        self._lock = threading.Lock()  # guards the buffer; never held while writing
        self._writing = threading.Lock()  # one flush at a time
        self._buffer: dict[str, list[dict]] = {}
        self._count = 0
        self._in_flight = 0  # rows taken by a flush that has not committed yet
        self._first_at: float | None = None
        self._closed = False
        self._not_before = 0.0  # monotonic time before which no due flush starts (pacing)
        self.flushes = 0  # flushes that stored rows
        self.background_error: BaseException | None = None
        self._wake = threading.Event()
        self._closing = threading.Event()  # cuts a pacing pause short when close() is called
        self._thread: threading.Thread | None = None
        _warm_arrow()
        if background:
            self._thread = threading.Thread(target=self._background, name="rlaif-writer", daemon=True)
            self._thread.start()

    @property
    def pending(self) -> int:
        """Rows buffered and not yet stored (rows of a flush under way count until it commits)."""
        with self._lock:
            return self._count + self._in_flight

    def add(self, table: str, row: dict) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("Writer.add after close()")
            self._buffer.setdefault(table, []).append(row)
            self._count += 1
            if self._first_at is None:
                self._first_at = time.monotonic()
            now = time.monotonic()
            due = self._count >= self.max_rows or now - self._first_at >= self.max_age_s
        if not due:
            return
        if self._thread is not None:
            # The writer thread waits out the pacing pause itself; waking it again while a flush runs would only
            # cost a lock round.
            if not self._wake.is_set():
                self._wake.set()
        elif now >= self._not_before:
            self.flush()

    def flush(self) -> dict[str, int]:
        """Store everything buffered in one transaction, on the caller's thread; returns new rows per table.

        Waits for a background flush under way first, so when it returns every row added before it is stored.
        """
        with self._writing:
            counts = self._write_buffer()
            self.background_error = None  # whatever failed in the background is stored now
            return counts

    def close(self) -> None:
        """Flush what is left and stop the writer thread. Raises if rows cannot be stored (they stay buffered)."""
        with self._lock:
            self._closed = True
        if self._thread is not None:
            self._closing.set()
            self._wake.set()
            self._thread.join()
        self.flush()

    def _write_buffer(self) -> dict[str, int]:
        """Take the buffer and store it; on failure put the rows back in front. Call with ``_writing`` held."""
        with self._lock:
            if not self._count:
                return {}
            batch, taken = self._buffer, self._count
            self._buffer, self._count, self._first_at = {}, 0, None
            self._in_flight = taken
        try:
            counts = self._write_bounded(batch)
        except BaseException:
            with self._lock:
                for table, rows in self._buffer.items():
                    batch.setdefault(table, []).extend(rows)
                self._buffer, self._count, self._in_flight = batch, self._count + taken, 0
                self._first_at = time.monotonic()  # retry when the next flush is due, not on every add
            raise
        gap = min(self.store.last_hold_s * (1 / self.max_busy - 1), self.max_age_s)
        with self._lock:
            self._in_flight = 0
            self.flushes += 1
            self._not_before = time.monotonic() + gap
        return counts

    def _write_bounded(self, batch: dict[str, list[dict]]) -> dict[str, int]:
        """Write under ``memory_limit_mb``, doubling it (and retrying) when DuckDB runs out.

        DuckDB caches data blocks up to 80% of RAM by default, and a flush into a large file touches many (its
        checkpoint on close rewrites segments and indexes), so without a cap a run's peak memory grows with the
        file. The cap bounds that cache; the indexes, which must stay resident, raise it when they need to.
        """
        while True:
            try:
                if self.memory_limit_mb is None:
                    return self.store.write(batch)
                return self.store.write(batch, memory_limit_mb=self.memory_limit_mb)
            except duckdb.OutOfMemoryException:
                if self.memory_limit_mb is None or self.memory_limit_mb >= _MEMORY_LIMIT_MAX_MB:
                    raise
                self.memory_limit_mb *= 2

    def _background(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                closed = self._closed
            if closed:
                return  # close() flushes the rest on its own thread, where an error can be raised
            pause = self._not_before - time.monotonic()
            if pause > 0 and self._closing.wait(pause):
                return
            with self._writing:
                try:
                    self._write_buffer()
                except Exception as exc:  # kept; flush() and close() retry and raise
                    self.background_error = exc

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
