"""The lake store (``RLAIF_DB=ducklake:...``): the schema, keyed writes, the sandbox and exports on a local catalog
file and on a real PostgreSQL catalog, and many writers committing into one lake at once.

PostgreSQL is Debian's (``/usr/lib/postgresql/15/bin``, installed by ``setup.sh --dev``), started by the tests on
a temporary data directory and a free loopback port, and stopped at the end.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pg_server import PgServer, require

from rlaif import lake
from rlaif.errors import StoreError
from rlaif.sandbox import sandbox_query, sandbox_rows
from rlaif.store import Store, utcnow


@pytest.fixture(scope="module")
def pg():
    require()
    server = PgServer().start()
    yield server
    server.stop()


def _columns(store: Store) -> dict[str, list[tuple[str, str, str]]]:
    """Every table's and view's columns as (name, type, nullable), in order."""
    rows = store.fetch(
        "SELECT table_name AS t, column_name AS c, data_type AS d, is_nullable AS n FROM information_schema.columns "
        "WHERE table_catalog = current_database() AND table_schema = 'main' ORDER BY table_name, ordinal_position")
    found: dict[str, list[tuple[str, str, str]]] = {}
    for r in rows:
        found.setdefault(r["t"], []).append((r["c"], r["d"], r["n"]))
    return found


def _prompt(i: int) -> dict:
    return {"prompt_id": f"p{i}", "text": f"hi {i}", "messages": [{"role": "user", "content": f"hi {i}"}],
            "created_at": utcnow()}


def test_a_lake_has_the_file_stores_columns_and_views(tmp_path: Path) -> None:
    file_store, lake_store = Store(tmp_path / "f.duckdb"), Store(f"ducklake:{tmp_path / 'cat.ducklake'}")
    file_store.migrate()
    assert lake_store.migrate()[-1] == file_store.fetch("SELECT max(name) AS n FROM schema_migrations")[0]["n"]
    assert lake_store.migrate() == []  # recorded: nothing applied twice
    mine, theirs = _columns(lake_store), _columns(file_store)
    assert mine.pop(lake.FENCE_TABLE) == [("commits", "BIGINT", "NO")]
    assert "sft_dataset" in theirs and "generations" in theirs
    assert mine == theirs
    assert lake.table_keys()["revisions"] == ("chain_id", "round")
    assert "PRIMARY KEY" not in lake.lake_ddl((Path(lake.__file__).parents[1] / "storage/001_initial.sql").read_text())


def test_lake_writes_skip_stored_keys_and_keys_repeated_in_a_batch(tmp_path: Path) -> None:
    store = Store(f"ducklake:{tmp_path / 'cat.ducklake'}", data_path=tmp_path / "files")
    store.migrate()
    assert store.write({"prompts": [_prompt(i) for i in range(5)] + [_prompt(0), _prompt(1)]}) == {"prompts": 5}
    assert store.insert("prompts", [_prompt(i) for i in range(3, 8)]) == 3
    (row,) = store.fetch("SELECT count(*) AS n, count(DISTINCT prompt_id) AS k FROM prompts")
    assert row == {"n": 8, "k": 8}
    assert store.existing("prompts", "prompt_id", ["p1", "p9"]) == {"p1"}
    store.upsert_run({"run_id": "r", "kind": "sft", "status": "running", "started_at": utcnow(),
                      "prefect_flow_run_id": "flow-1"})
    store.upsert_run({"run_id": "r", "status": "completed", "finished_at": utcnow(), "prefect_flow_run_id": None})
    (run,) = store.fetch("SELECT status, finished_at IS NOT NULL AS done, prefect_flow_run_id AS f FROM runs")
    assert run == {"status": "completed", "done": True, "f": "flow-1"}
    with pytest.raises(StoreError, match="prompts.text"):  # a NOT NULL column, named; nothing written
        store.write({"prompts": [_prompt(20)], "runs": [{"run_id": "x"}]} | {"prompts": [{"prompt_id": "p30"}]})
    assert store.fetch("SELECT count(*) AS n FROM prompts")[0]["n"] == 8
    assert any((tmp_path / "files").rglob("*.parquet")) or store.fetch(
        "SELECT count(*) AS n FROM prompts")[0]["n"]  # inlined or in files: the rows are stored either way


def test_threads_writing_the_same_keys_into_one_lake_store_each_once(pg: PgServer, tmp_path: Path) -> None:
    """Two writers anti-joining against one snapshot would both store a key; the commit fence makes one of them
    lose, retry against the new snapshot and skip it."""
    db = f"ducklake:postgres:{pg.create_db('same_keys')}"
    Store(db, data_path=tmp_path / "data").migrate()
    stores = [Store(db) for _ in range(3)]  # one per thread: separate DuckDB instances, as processes would be
    rows = [_prompt(i) for i in range(40)]

    def write(store: Store) -> None:
        for start in range(0, 40, 5):
            store.write({"prompts": rows[start : start + 10]})  # overlapping batches, same keys in every thread

    threads = [threading.Thread(target=write, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    (row,) = stores[0].fetch("SELECT count(*) AS n, count(DISTINCT prompt_id) AS k FROM prompts")
    assert row == {"n": 40, "k": 40}
    assert sum(s.stats.commits for s in stores) == 3 * 8
    assert sum(s.stats.conflicts for s in stores) > 0  # the writers did overlap, and the losers retried


def test_the_sandbox_on_a_lake_reads_and_refuses_writes_files_and_the_catalog(pg: PgServer, tmp_path: Path) -> None:
    db = f"ducklake:postgres:{pg.create_db('sandbox')}"
    store = Store(db, data_path=tmp_path / "data")
    store.migrate()
    store.write({"prompts": [_prompt(i) for i in range(300)]})  # past inlining: real Parquet files
    columns, rows, more = sandbox_rows(db, "SELECT count(*) AS n FROM prompts")
    assert (columns, rows, more) == (["n"], [(300,)], False)
    assert "0" in sandbox_query(db, "SELECT count(*) FROM sft_dataset", fmt="csv")
    for sql, message in [
        ("INSERT INTO prompts SELECT * FROM prompts", "read-only: INSERT"),
        ("SELECT * FROM read_csv('/etc/passwd')", "cannot read files outside the database: /etc/passwd"),
        ("SELECT * FROM postgres_query('__ducklake_metadata_rlaif', 'SELECT 1')", "cannot call postgres_query"),
        ("SET enable_external_access = true", "read-only: SET"),
    ]:
        with pytest.raises(StoreError, match=message):
            sandbox_query(db, sql)


def test_training_reads_a_lake_and_records_its_run_and_checkpoints_there(tiny_dir, tmp_path: Path) -> None:
    from train_helpers import crafted_store, metric

    from rlaif.train.options import SftOptions
    from rlaif.train.sft import train_sft

    store = crafted_store(Path(f"ducklake:{tmp_path / 'train.ducklake'}"), pairs=12)
    assert store.lake is not None
    options = SftOptions(lr=1e-3, batch_size=4, micro_batch_size=2, max_steps=6, save_every=3)
    result = train_sft(store, options=options, base_model="tiny", base_path=tiny_dir, out_dir=tmp_path / "out",
                       device="cpu", log=lambda _: None)
    before, after = metric(store, result.run_id, "loss", "train")
    assert after < before
    (run,) = store.fetch("SELECT status, steps_done FROM train_runs")
    assert run == {"status": "completed", "steps_done": 6}
    steps = [r["step"] for r in store.fetch("SELECT step FROM train_checkpoints WHERE kind = 'resume' ORDER BY step")]
    assert 3 in steps  # the checkpoint of step 3, registered through the anti-join insert


def test_the_report_renders_from_a_lake(tmp_path: Path) -> None:
    from train_helpers import crafted_store

    from rlaif.report.build import write_report

    db = f"ducklake:{tmp_path / 'r.ducklake'}"
    crafted_store(Path(db), pairs=6)
    page = write_report(db, tmp_path / "report.html").read_text(encoding="utf-8")
    assert "<html" in page.lower() and len(page) > 10_000


def test_a_write_that_keeps_losing_commit_races_gives_up_bounded(tmp_path: Path, monkeypatch) -> None:
    import duckdb

    from rlaif import lake_store

    store = Store(f"ducklake:{tmp_path / 'cat.ducklake'}", lock_timeout_s=60)
    store.migrate()
    monkeypatch.setattr(lake_store, "MAX_RETRIES", 3)

    def always_loses(con):
        raise duckdb.TransactionException("Failed to commit DuckLake transaction. Transaction conflict - test")

    started = time.monotonic()
    with pytest.raises(StoreError, match="lost 4 commit races"):
        lake_store.transaction(store, always_loses)
    assert store.stats.conflicts == 4 and time.monotonic() - started < 30
    monkeypatch.setattr(lake_store, "MAX_RETRIES", 10_000)
    started = time.monotonic()
    with pytest.raises(StoreError, match=r"lost \d+ commit races"):  # now the time bound ends it, not the count
        lake_store.transaction(store, always_loses, budget_s=0.3)
    assert 4 < store.stats.conflicts < 4 + 10_000 and time.monotonic() - started < 15
