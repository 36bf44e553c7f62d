"""Prompt sources that are never read whole: a ``sql:`` query spooled through the sandbox (read-only, the database
released while the prompts stream on), endless files through a named pipe, and Parquet a batch at a time."""

from __future__ import annotations

import os
import threading
from itertools import islice
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from source_files import TURNS, write_db, write_jsonl, write_parquet

from rlaif.errors import ConfigError, StoreError
from rlaif.sources import (
    BadRow,
    Record,
    read_prompts,
    read_records,
)
from rlaif.store import Store, utcnow

# -- SQL through the sandbox -------------------------------------------------------------------------------------

def test_sql_source_is_read_only_and_releases_the_database(tmp_path: Path) -> None:
    db = write_db(tmp_path / "db.duckdb", [{"prompt": f"q{i}", "messages": [{"role": "user", "content": f"q{i}"}]}
                                           for i in range(2500)])
    rows = read_prompts("sql:SELECT text AS prompt FROM prompts ORDER BY text", db=db)
    assert next(rows).text == "q0"
    # The result was spooled: the database is free for the run's own writes while the prompts stream on.
    Store(db).insert("runs", [{"run_id": "r", "kind": "sft", "status": "running", "started_at": utcnow()}])
    assert sum(1 for _ in rows) == 2499
    with pytest.raises(ConfigError) as err:
        list(read_prompts("sql:SELECT NULL AS prompt", db=db))
    assert str(err.value) == f"sql:1: column 'prompt': {TURNS} NULL"
    with pytest.raises(StoreError, match="read-only: DELETE is not allowed"):
        list(read_prompts("sql:DELETE FROM prompts", db=db))
    with pytest.raises(StoreError, match="cannot read files outside the database"):
        list(read_prompts(f"sql:SELECT * FROM read_csv('{tmp_path}/x.csv')", db=db))
    assert Store(db).fetch("SELECT count(*) AS n FROM prompts") == [{"n": 2500}]
    with pytest.raises(ConfigError, match="a sql: source needs the project database"):
        list(read_prompts("sql:SELECT 1 AS prompt"))
    assert list(read_prompts("sql:SELECT text AS prompt FROM prompts WHERE false", db=db)) == []


def test_a_long_sql_source_query_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlaif.sources import sql

    monkeypatch.setattr(sql, "SPOOL_TIMEOUT_S", 0.3)
    db = write_db(tmp_path / "db.duckdb", [])
    with pytest.raises(StoreError, match=r"stopped the query after 0\.3s"):
        list(read_prompts("sql:SELECT count(*)::VARCHAR AS prompt FROM range(1000000000000) a, range(1000) b", db=db))


# -- streaming ---------------------------------------------------------------------------------------------------

def _endless_fifo(path: Path, header: str, line: str) -> threading.Thread:
    """A named pipe that yields ``line`` forever: a source no reader could hold whole, read until it is closed."""
    os.mkfifo(path)

    def feed() -> None:
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write(header)
                while True:
                    f.write(line * 1000)
        except (BrokenPipeError, OSError):
            return  # the reader closed the pipe

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize(("suffix", "header", "line"), [
    (".jsonl", "", '{"prompt": "again"}\n'), (".csv", "prompt\n", "again\n"), (".txt", "", "again\n"),
])
def test_text_sources_stream_an_endless_file(suffix: str, header: str, line: str, tmp_path: Path) -> None:
    feeder = _endless_fifo(tmp_path / f"endless{suffix}", header, line)
    records = read_records(tmp_path / f"endless{suffix}")
    got = list(islice(records, 5000))
    assert [r.row for r in got[:3]] == [1, 2, 3] and len(got) == 5000
    records.close()  # closes the file: the feeder's next write fails and it stops
    feeder.join(timeout=5)
    assert not feeder.is_alive()


def test_duplicates_collapse_while_streaming(tmp_path: Path) -> None:
    feeder = _endless_fifo(tmp_path / "same.jsonl", '{"prompt": "first"}\n', '{"prompt": "again"}\n')
    prompts = read_prompts(tmp_path / "same.jsonl")
    assert [next(prompts).text, next(prompts).text] == ["first", "again"]
    prompts.close()
    feeder.join(timeout=5)
    assert not feeder.is_alive()


def test_parquet_is_read_a_batch_at_a_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_parquet(tmp_path / "big.parquet", [{"prompt": f"p{i}"} for i in range(20_000)], row_group_size=2000)
    pulled: list[int] = []
    real = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for batch in real(self, *args, **kwargs):
            pulled.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    prompts = read_prompts(path)
    assert next(prompts).text == "p0"
    assert pulled == [1024]  # one batch of 20 read so far
    assert sum(1 for _ in prompts) == 19_999 and sum(pulled) == 20_000


def test_records_are_frozen_rows(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [{"prompt": "a", "extra": [1, 2]}])
    (record,) = read_records(path)
    assert record == Record(str(path), 1, {"prompt": "a", "extra": [1, 2]})
    with pytest.raises(ConfigError, match=r"r2\.jsonl:1: expected a JSON object, got a number"):
        list(read_records(write_jsonl(tmp_path / "r2.jsonl", [3])))
    assert isinstance(next(read_records(tmp_path / "r2.jsonl", skip_bad_rows=True)), BadRow)
