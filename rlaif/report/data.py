"""SQL helpers shared by the report's sections: run filters, table presence, proportions with intervals.

Every section reads through ``rows``/``one`` on the read-only connection it is given. A run filter is written
in SQL by ``in_run()``: ``($run IS NULL OR run_id = $run)``, so one query serves the whole database and a
single run.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rlaif.judge import metrics
from rlaif.judge.metrics import Z95

if TYPE_CHECKING:
    import duckdb


def in_run(column: str = "run_id") -> str:
    """The run filter of a run-scoped query; ``column`` qualifies it where a join makes run_id ambiguous."""
    return f"($run::VARCHAR IS NULL OR {column} = $run)"


def rows(con: "duckdb.DuckDBPyConnection", sql: str, run_id: str | None = None, **params: Any) -> list[dict]:
    """Run one query; rows as dicts. ``$run`` and the named ``params`` are bound only where the SQL uses them
    (DuckDB refuses parameters that a statement does not name)."""
    given = {"run": run_id, **params}
    bound = {k: v for k, v in given.items() if re.search(rf"\${k}\b", sql)}  # $run is not $runs
    cur = con.execute(sql, bound) if bound else con.execute(sql)
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


def one(con: "duckdb.DuckDBPyConnection", sql: str, run_id: str | None = None, **params: Any) -> dict:
    """The single row of an aggregate query."""
    (row,) = rows(con, sql, run_id, **params)
    return row


def tables(con: "duckdb.DuckDBPyConnection") -> set[str]:
    """Names of the tables and views in the database (information_schema, so views count too)."""
    return {t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}


def columns(con: "duckdb.DuckDBPyConnection", table: str) -> set[str]:
    """Names of a table's columns (later migrations add some)."""
    return {c for (c,) in con.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ?",
                                      [table]).fetchall()}


def missing(con: "duckdb.DuckDBPyConnection", *names: str) -> str | None:
    """A one-line note naming the tables this database lacks, or None when all are there.

    An older database that was never migrated by a newer rlaif lacks the newer tables; the report opens files
    read-only, so it says so instead of migrating.
    """
    absent = [n for n in names if n not in tables(con)]
    if not absent:
        return None
    which = ", ".join(absent)
    return f"No table {which} in this database (a newer rlaif run migrates it)."


def migrations(con: "duckdb.DuckDBPyConnection") -> set[int]:
    """Versions of the storage migrations applied to this database."""
    if "schema_migrations" not in tables(con):
        return set()
    return {v for (v,) in con.execute("SELECT version FROM schema_migrations").fetchall()}


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The judge metrics' Wilson interval (sensible at 0, 1 and small n), or None with no samples: a dash."""
    return metrics.wilson(successes, n, z) if n > 0 else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is zero."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def scope(run_id: str | None) -> str:
    """How a 'no data' line names what was searched."""
    return f"run {run_id}" if run_id else "this database"


def cut(text: str | None, limit: int) -> str:
    """Text shortened to ``limit`` characters, saying how much was left out; None as a visible marker."""
    if text is None:
        return "(none: the engine call failed or its output could not be parsed)"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit:,} more characters)"


def elapsed_unit(span_s: float) -> tuple[float, str]:
    """A divisor and unit name that make a time axis read in seconds, minutes or hours."""
    if span_s < 180:
        return 1.0, "s"
    if span_s < 3 * 3600:
        return 60.0, "min"
    return 3600.0, "h"
