"""``write_report``: the one entry point that turns a DuckDB file into one self-contained HTML page.

The database is opened read-only, so a report can be written while a flow is writing; the connection is held
for the queries only (figures are drawn after it closes). The page is written under a temporary name and renamed,
so a reader never sees half a page.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rlaif.report import chains, generation, judge, overview, preferences, rl, training
from rlaif.report.data import migrations, rows, tables
from rlaif.report.model import Group, Section

if TYPE_CHECKING:
    import duckdb

SectionFn = Callable[["duckdb.DuckDBPyConnection", "str | None"], Section]
# The page's parts, in order. A section is a function (read-only connection, run id or None) -> Section.
GROUPS: tuple[tuple[str, str, list[SectionFn]], ...] = (
    ("overview", "Overview", overview.SECTIONS),
    ("generation", "Generation", generation.SECTIONS + chains.SECTIONS),
    ("preferences", "Preferences", preferences.SECTIONS + judge.SECTIONS),
    ("training", "Training", training.SECTIONS + rl.SECTIONS),
)


def build_groups(con: "duckdb.DuckDBPyConnection", run_id: str | None = None) -> list[Group]:
    """Every section of the report, computed on ``con``; with ``run_id`` the run-scoped ones cover that run."""
    return [Group(key, title, [section(con, run_id) for section in sections]) for key, title, sections in GROUPS]


def _check_run(con: "duckdb.DuckDBPyConnection", db: Path, run_id: str) -> None:
    from rlaif.errors import ConfigError

    kinds = [t for t in ("runs", "train_runs") if t in tables(con)]  # generation and evaluation runs, training runs
    if any(rows(con, f"SELECT 1 FROM {t} WHERE run_id = $run", run_id) for t in kinds):
        return
    latest = [r["run_id"] for r in rows(con, "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 3")]
    hint = f"the latest: {', '.join(latest)}" if latest else "it has no runs yet"
    raise ConfigError(f"no run {run_id!r} in {db}; {hint}")


def render_report(db: str | Path, run_id: str | None = None) -> str:
    """The report page as a string."""
    from rlaif.report.figures import render
    from rlaif.report.page import render_page
    from rlaif.store import Store, utcnow

    db = Path(db)
    with Store(db).connect(read_only=True) as con:
        if run_id is not None:
            _check_run(con, db, run_id)
        groups = build_groups(con, run_id)
        schema = max(migrations(con), default=0)
    covered = f"run {run_id}" if run_id else "all runs"
    meta = [f"Database {db} · {covered} · schema migration {schema:03d} · written {utcnow():%Y-%m-%d %H:%M} UTC",
            "Sections with nothing to show say so in one line. Intervals are 95%."]
    footer = ("Written by `rlaif report`: self-contained (inline styles, images embedded, no scripts), so it "
              "opens offline. Every number comes from SQL over the database (rlaif/report/); `rlaif sql` "
              "queries the same tables.")
    return render_page(groups, title="rlaif report" + (f": run {run_id}" if run_id else ""), meta=meta,
                       footer=footer, draw=render)


def beside(db: str | Path) -> Path:
    """The default report file for a database: ``rlaif.duckdb`` -> ``rlaif-report.html`` in the same folder; a
    lake's beside its catalog file, or ``rlaif-report.html`` here for a PostgreSQL catalog."""
    from rlaif.lake import Lake, is_lake

    if is_lake(db):
        lake = Lake.parse(db)
        db = lake.local_path if lake.is_local else Path("rlaif.duckdb")
    db = Path(db)
    return db.with_name(f"{db.stem}-report.html")


def write_report(db: str | Path, out: str | Path, run_id: str | None = None) -> Path:
    """Write the report of ``db`` (one run, or every run) to ``out``; returns the path written."""
    out = Path(out)
    page = render_report(db, run_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
