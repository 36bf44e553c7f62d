"""The report's first section: which runs it covers and how many rows each table holds for them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlaif.report.data import in_run, one, rows, scope, tables
from rlaif.report.model import Section, Stat, Table

if TYPE_CHECKING:
    import duckdb

    Con = duckdb.DuckDBPyConnection

RUNS_SHOWN = 30  # the most recent runs listed; `rlaif sql` lists the rest
ERROR_CHARS = 160
# Tables and views counted for the scope (those the database has), each with its run_id column; prompts have none
# and are counted through their generations.
COUNTED = ("generations", "attempts", "responses", "revisions", "comparisons", "sft_dataset", "preference_dataset")


def runs(con: "Con", run_id: str | None) -> Section:
    """The runs covered, newest first, with their status, timing, engine and constitution."""
    key, title = "overview-runs", "Runs"
    total = one(con, f"SELECT count(*) AS n FROM runs WHERE {in_run()}", run_id)["n"]
    if not total:
        return Section.nodata(key, title, f"No runs in {scope(run_id)}.")
    listed = rows(con, f"""
        SELECT run_id, kind, status, started_at,
               date_diff('millisecond', started_at, finished_at) / 1e3 AS seconds,
               concat_ws(' · ', engine, model) AS engine,
               constitution_name || coalesce('@' || left(constitution_version, 8), '') AS constitution,
               left(error, {ERROR_CHARS}) AS error
        FROM runs WHERE {in_run()} ORDER BY started_at DESC LIMIT {RUNS_SHOWN}""", run_id)
    prompts = one(con, f"SELECT count(DISTINCT prompt_id) AS n FROM generations WHERE {in_run()}", run_id)["n"]
    present = [t for t in COUNTED if t in tables(con)]
    counts = one(con, "SELECT " + ", ".join(
        f"(SELECT count(*) FROM {t} WHERE {in_run()}) AS {t}" for t in present), run_id)
    shown = f"the {len(listed)} most recent of {total:,} runs" if total > len(listed) else ""
    return Section(key, title, [
        Stat("runs_total", "runs", total),
        Stat("prompts", "prompts with results", prompts),
        *[Stat(f"rows_{t}", t, counts[t]) for t in present],
        Table("runs", ["run", "kind", "status", "started (UTC)", "seconds", "engine · model",
                       "constitution@version", "error"],
              [[r["run_id"], r["kind"], r["status"], r["started_at"], r["seconds"], r["engine"],
                r["constitution"], r["error"]] for r in listed], shown),
    ])


SECTIONS = [runs]
