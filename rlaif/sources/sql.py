"""``sql:SELECT ...``: a read-only query over the project database, through ``rlaif.sandbox``.

DuckDB lets one process hold a file, and a read-only connection and a writer in the same process conflict too,
so a source that kept the query open while a run writes its rows would lock the run out of its own database.
The result is therefore spooled, batch by batch, to a temporary Parquet file and read from there: the database
is held only while the query runs (bounded by the sandbox's timeout), memory holds one batch, and the disk holds
the result until the generator finishes or is closed.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

from rlaif.errors import ConfigError
from rlaif.sources.arrow import BATCH_ROWS, read_parquet
from rlaif.sources.base import Columns, Record

SPOOL_TIMEOUT_S = 60.0  # a query that selects prompts runs in seconds; a minute means it is scanning too much


def query_text(spec: str) -> str:
    """The SQL of a ``sql:`` spec, stripped of the prefix, surrounding space and a trailing semicolon."""
    return spec.lstrip()[4:].strip().rstrip(";").strip()


def read_sql(source: str, db: str | Path | None) -> Iterator[Columns | Record]:
    """Rows of the query's result, numbered from 1 in the order the query returns them."""
    import pyarrow.parquet as pq

    from rlaif.sandbox import sandbox_batches

    if db is None:
        raise ConfigError(f"{source}: a sql: source needs the project database (--db or RLAIF_DB)")
    with tempfile.TemporaryDirectory(prefix="rlaif-sql-") as tmp:
        spool = Path(tmp) / "result.parquet"
        writer = None
        try:
            for batch in sandbox_batches(db, query_text(source), batch_rows=BATCH_ROWS, timeout_s=SPOOL_TIMEOUT_S):
                if writer is None:
                    writer = pq.ParquetWriter(spool, batch.schema)
                writer.write_batch(batch)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:  # no rows: nothing was spooled, not even a schema
            return
        yield from read_parquet(source, spool)
