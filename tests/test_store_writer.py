"""The store's Writer on real files (flushes by size, age and on close; thread safety; the background writer),
and file locking between real processes: the reason the writer never holds the file between flushes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from store_rows import count, prompt, revision

from rlaif.errors import StoreError
from rlaif.store import Store, Writer

# -- Writer ---------------------------------------------------------------------------------------------------

def test_writer_flushes_by_size(store: Store) -> None:
    w = Writer(store, max_rows=3, max_age_s=60)
    w.add("prompts", prompt("p1"))
    w.add("prompts", prompt("p2"))
    assert (count(store, "prompts"), w.pending) == (0, 2)
    w.add("revisions", revision("c1", 1, "r"))
    assert (count(store, "prompts"), count(store, "revisions"), w.pending) == (2, 1, 0)


def test_writer_flushes_by_age_and_on_close(store: Store) -> None:
    w = Writer(store, max_rows=1000, max_age_s=0.05)
    w.add("prompts", prompt("p1"))
    assert count(store, "prompts") == 0
    time.sleep(0.1)
    w.add("prompts", prompt("p2"))  # the first row is now older than max_age_s
    assert count(store, "prompts") == 2
    w.add("prompts", prompt("p3"))
    w.close()
    assert count(store, "prompts") == 3
    with pytest.raises(RuntimeError):
        w.add("prompts", prompt("p4"))


def test_writer_is_thread_safe(store: Store) -> None:
    w = Writer(store, max_rows=23, max_age_s=60)
    threads = [threading.Thread(target=lambda t=t: [w.add("prompts", prompt(f"{t}-{i}")) for i in range(50)])
               for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert count(store, "prompts") == 200


# -- locking between real processes ---------------------------------------------------------------------------

HOLDER = textwrap.dedent("""
    import select, sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print("held", flush=True)
    select.select([sys.stdin], [], [], float(sys.argv[2]))  # until the parent releases it (or the bound passes)
    con.close()
""")


def hold(db: Path, bound_s: float = 120.0) -> subprocess.Popen:
    """A child process holding a write connection on ``db`` until ``release(child)`` (at most ``bound_s``).

    Returns once it holds the lock, so a test knows the lock is held for as long as it wants, whatever the load.
    """
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(bound_s)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "held"
    return child


def release(child: subprocess.Popen) -> None:
    """Let a ``hold`` child close its connection and exit; waits for it."""
    child.stdin.close()
    child.wait(timeout=60)


def test_connect_waits_for_another_process_then_succeeds(store: Store) -> None:
    child = hold(store.path)
    seen: list[tuple] = []
    waiter = threading.Thread(target=lambda: seen.append(_count_runs(store)))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive() and not seen  # the lock is held: connect waits (its lock timeout is 30 s)
    release(child)
    waiter.join(60)
    assert seen == [(0,)]


def _count_runs(store: Store) -> tuple:
    with store.connect() as con:
        return con.execute("SELECT count(*) FROM runs").fetchone()


def test_connect_gives_up_with_one_line_after_lock_timeout(store: Store) -> None:
    child = hold(store.path)
    try:
        with pytest.raises(StoreError) as err, Store(store.path, lock_timeout_s=0.5).connect(read_only=True):
            pass
        message = str(err.value)
        assert "\n" not in message
        assert f"is locked by another process (pid {child.pid}) for over 0.5s" in message
    finally:
        release(child)


@pytest.mark.parametrize("background", [False, True], ids=["flush", "background-close"])
def test_writer_keeps_rows_when_a_flush_times_out(store: Store, background: bool) -> None:
    w = Writer(Store(store.path, lock_timeout_s=0.3), max_rows=1000, max_age_s=60, background=background)
    w.add("prompts", prompt("p1"))
    child = hold(store.path)
    finish = w.close if background else w.flush  # close() flushes on the caller's thread, where it can raise
    try:
        with pytest.raises(StoreError, match="locked"):
            finish()
        assert w.pending == 1
    finally:
        release(child)
    assert w.flush() == {"prompts": 1}
    assert count(store, "prompts") == 1


class GatedStore(Store):
    """A real store whose writes wait until ``gate`` is set, noting the thread each write ran on."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.gate, self.entered, self.threads = threading.Event(), threading.Event(), []

    def write(self, batches: dict[str, list[dict]]) -> dict[str, int]:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        self.gate.wait(60)
        return super().write(batches)


def test_background_writer_flushes_off_the_callers_thread(store: Store) -> None:
    gated = GatedStore(store.path)
    w = Writer(gated, max_rows=2, max_age_s=60, background=True)
    w.add("prompts", prompt("p0"))
    w.add("prompts", prompt("p1"))  # due: the writer thread takes these two
    assert gated.entered.wait(60)
    for i in range(2, 8):  # three more flushes come due while the first one is still writing
        w.add("prompts", prompt(f"p{i}"))  # a synchronous writer would block here, in write, on this thread
    assert gated.threads == ["rlaif-writer"]  # one write so far, off the caller's thread
    assert w.pending == 8  # the first flush has not committed yet
    gated.gate.set()
    w.close()
    assert count(store, "prompts") == 8 and w.pending == 0
    assert len(gated.threads) <= 3  # rows added during a flush wait for the next one and go together


def test_background_writer_keeps_rows_when_a_flush_fails(store: Store) -> None:
    w = Writer(Store(store.path, lock_timeout_s=0.3), max_rows=2, max_age_s=60, background=True)
    child = hold(store.path)
    try:
        w.add("prompts", prompt("p1"))
        w.add("prompts", prompt("p2"))  # due: the writer thread tries, times out on the lock
        deadline = time.monotonic() + 60  # bounded; ends as soon as the writer thread has given up
        while w.background_error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert isinstance(w.background_error, StoreError) and w.pending == 2
        w.add("prompts", prompt("p3"))
    finally:
        release(child)
    w.close()  # the rows that failed in the background are stored now, none twice
    assert count(store, "prompts") == 3 and w.background_error is None


READER = textwrap.dedent("""
    import json, sys, time
    from rlaif.sandbox import sandbox_query
    counts = []
    deadline = time.monotonic() + 60
    while len(set(counts)) < 3 and time.monotonic() < deadline:  # three different committed states seen
        counts.append(json.loads(sandbox_query(sys.argv[1], "SELECT count(*) AS n FROM prompts", fmt="json"))[0]["n"])
        time.sleep(0.02)
    print(json.dumps(sorted(set(counts))), flush=True)
""")


def test_a_reader_in_another_process_gets_in_between_flushes(store: Store) -> None:
    writer = Writer(store, max_rows=10_000, max_age_s=0.05)
    stop = threading.Event()
    flushes: list[float] = []

    def produce() -> None:  # a flow's steady trickle of rows, flushed every 50 ms
        i = 0
        while not stop.is_set():
            before = writer.pending
            writer.add("prompts", prompt(f"p{i}"))
            if writer.pending < before + 1:
                flushes.append(time.monotonic())
            i += 1
            time.sleep(0.002)

    thread = threading.Thread(target=produce)
    thread.start()
    try:
        reader = subprocess.run([sys.executable, "-c", READER, str(store.path)],
                                capture_output=True, text=True, timeout=300)
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert reader.returncode == 0, reader.stderr
    seen = json.loads(reader.stdout)
    assert len(seen) >= 3  # the reader got in between flushes: it read three different committed states
    assert flushes and writer.pending == 0 and count(store, "prompts") >= max(seen)


def test_writer_memory_cap_doubles_when_duckdb_runs_out(store: Store) -> None:
    """The cap bounds DuckDB's cache during flushes; a database that needs more gets it instead of failing."""
    w = Writer(store, memory_limit_mb=1, max_rows=10_000)
    for i in range(3000):
        w.add("prompts", prompt(f"p{i}", text="x" * 500))
    w.close()
    assert count(store, "prompts") == 3000 and w.memory_limit_mb > 1
