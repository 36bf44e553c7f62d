"""What each run did, from the database alone: the queries behind ``rlaif runs`` and ``rlaif runs show``.

Counts come from the tables themselves (every table with a ``run_id`` column, grouped by run), not from a summary
a run stored about itself, so a crashed run is counted as far as it got. The ``runs`` table grows columns over
migrations (a configuration hash, the engine roles); the columns are read as they exist in the file, so this
works on databases from before and after such a migration. Training runs (``train_runs``, migration 006) are
listed beside the generation runs, their kind shown as ``train-<kind>`` and their config as their options.

Everything here opens the file read-only and briefly: it works while runs are writing (docs/storage.md).
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from rlaif.errors import ConfigError

_LISTED = ("run_id", "kind", "status", "started_at", "finished_at", "prefect_flow_run_id")


def _rows(con, sql: str, params: list | dict | None = None) -> list[dict]:
    cur = con.execute(sql, params) if params else con.execute(sql)
    names = [d[0] for d in cur.description or ()]
    return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


def _run_tables(con) -> list[str]:
    """Tables (not views) with a run_id column, but runs itself."""
    return [t for (t,) in con.execute(
        "SELECT c.table_name FROM information_schema.columns c JOIN information_schema.tables t "
        "USING (table_catalog, table_schema, table_name) WHERE t.table_type = 'BASE TABLE' "
        "AND c.column_name = 'run_id' AND c.table_name NOT IN ('runs', 'train_runs') ORDER BY c.table_name"
    ).fetchall()]


def _run_rows(con, prefix: str = "") -> list[dict]:
    """Rows of runs and, where the table exists, of train_runs, whose id starts with ``prefix``."""
    rows = _rows(con, "SELECT * FROM runs WHERE starts_with(run_id, ?)", [prefix])
    if con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'train_runs'").fetchone()[0]:
        for row in _rows(con, "SELECT * FROM train_runs WHERE starts_with(run_id, ?)", [prefix]):
            row["kind"], row["params"] = f"train-{row['kind']}", row.pop("config", None)
            rows.append(row)
    return rows


def _counts(con, run_ids: list[str]) -> dict[str, dict[str, int]]:
    """run_id -> {table: rows} for every table with a run_id column."""
    out: dict[str, dict[str, int]] = {r: {} for r in run_ids}
    for table in _run_tables(con):
        for run_id, n in con.execute(
            f'SELECT run_id, count(*) FROM "{table}" WHERE run_id IN (SELECT unnest(?)) GROUP BY run_id',
            [run_ids],
        ).fetchall():
            out[run_id][table] = int(n)
    return out


def _tokens(con, run_ids: list[str]) -> dict[str, dict[str, int]]:
    rows = _rows(con, "SELECT run_id, coalesce(sum(prompt_tokens), 0) AS prompt_tokens, "
                      "coalesce(sum(completion_tokens), 0) AS tokens FROM generations "
                      "WHERE run_id IN (SELECT unnest(?)) GROUP BY run_id", [run_ids])
    return {r.pop("run_id"): r for r in rows}


def _failed_attempts(con, run_ids: list[str]) -> dict[str, int]:
    return dict(con.execute("SELECT run_id, count(*) FROM attempts WHERE status = 'failed' "
                            "AND run_id IN (SELECT unnest(?)) GROUP BY run_id", [run_ids]).fetchall())


def _duration(run: dict, now: datetime) -> float | None:
    start, end = run.get("started_at"), run.get("finished_at")
    if start is None:
        return None
    if end is None:
        return (now - start).total_seconds() if run.get("status") == "running" else None
    return (end - start).total_seconds()


def _summarise(run: dict, counts: dict[str, int], tokens: dict[str, int], failed: int, now: datetime) -> dict:
    seconds = _duration(run, now)
    out = {k: run.get(k) for k in _LISTED}
    out.update(
        duration_s=round(seconds, 1) if seconds is not None else None,
        generations=counts.get("generations", 0), failed_attempts=failed,
        revisions=counts.get("revisions", 0), comparisons=counts.get("comparisons", 0),
        tokens=tokens.get("tokens", 0), prompt_tokens=tokens.get("prompt_tokens", 0),
        tokens_per_s=round(tokens.get("tokens", 0) / seconds, 1) if seconds else None,
        rows=counts,
    )
    return out


def list_runs(db: str | Path, *, limit: int = 50, kind: str | None = None) -> list[dict]:
    """The latest ``limit`` runs (newest first), each with its counts, tokens, duration and Prefect flow run."""
    from rlaif.store import Store, utcnow

    with Store(db).connect(read_only=True) as con:
        runs = [r for r in _run_rows(con) if kind is None or r["kind"] == kind]
        runs.sort(key=lambda r: (r["started_at"], r["run_id"]), reverse=True)
        runs = runs[:limit]
        ids = [r["run_id"] for r in runs]
        if not ids:
            return []
        counts, tokens, failed = _counts(con, ids), _tokens(con, ids), _failed_attempts(con, ids)
    now = utcnow()
    return [_summarise(r, counts[r["run_id"]], tokens.get(r["run_id"], {}), failed.get(r["run_id"], 0), now)
            for r in runs]


def run_detail(db: str | Path, run_id: str) -> dict:
    """One run (a unique prefix of its id will do): its options, summary, calls per stage and failures."""
    from rlaif.store import Store, utcnow

    with Store(db).connect(read_only=True) as con:
        matches = sorted(_run_rows(con, run_id), key=lambda r: r["run_id"])
        exact = [m for m in matches if m["run_id"] == run_id]
        if exact:
            matches = exact
        if not matches:
            raise ConfigError(f"no run {run_id!r} in {db}; `rlaif runs` lists them")
        if len(matches) > 1:
            raise ConfigError(f"run id {run_id!r} is ambiguous: "
                              f"{', '.join(m['run_id'] for m in matches[:5])}; give more of it")
        run = matches[0]
        rid = [run["run_id"]]
        summary = _summarise(run, _counts(con, rid)[run["run_id"]], _tokens(con, rid).get(run["run_id"], {}),
                             _failed_attempts(con, rid).get(run["run_id"], 0), utcnow())
        stages = _rows(con, "SELECT stage, count(*) AS calls, coalesce(sum(completion_tokens), 0) AS tokens, "
                            "round(avg(latency_s), 3) AS mean_latency_s FROM generations WHERE run_id = ? "
                            "GROUP BY stage ORDER BY stage", rid)
        errors = _rows(con, "SELECT stage, error, count(*) AS tries FROM attempts WHERE run_id = ? "
                            "AND status = 'failed' GROUP BY stage, error ORDER BY tries DESC, stage LIMIT 20", rid)
        (gave_up,) = con.execute("SELECT count(DISTINCT a.key) FROM attempts a WHERE a.run_id = ? AND NOT EXISTS "
                                 "(SELECT 1 FROM generations g WHERE g.key = a.key)", rid).fetchone()
        flags = []
        if "row_flags" in _run_tables(con):
            flags = _rows(con, "SELECT target, flag, count(*) AS rows FROM row_flags WHERE run_id = ? "
                               "GROUP BY target, flag ORDER BY target, flag", rid)
    options = {k: v for k, v in run.items() if k not in _LISTED and k not in ("params", "error")}
    params = run.get("params")
    return {
        "run": summary,
        "options": {"params": json.loads(params) if params else {}, **options},
        "stages": stages,
        "failures": {"error": run.get("error"), "requests_failed": int(gave_up), "attempt_errors": errors,
                     "flags": flags},
    }


# -- text ----------------------------------------------------------------------------------------------------

_COLUMNS = (("run_id", "run"), ("kind", "kind"), ("status", "status"), ("started_at", "started (UTC)"),
            ("duration_s", "seconds"), ("generations", "calls"), ("failed_attempts", "failed"),
            ("revisions", "revisions"), ("comparisons", "judged"), ("tokens", "tokens"),
            ("tokens_per_s", "tok/s"), ("prefect_flow_run_id", "prefect flow run"))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def format_runs(runs: list[dict]) -> str:
    """An aligned table, one line per run; numbers right-aligned."""
    if not runs:
        return "no runs yet"
    header = [title for _, title in _COLUMNS]
    body = [[_cell(r.get(key)) for key, _ in _COLUMNS] for r in runs]
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
    numeric = [isinstance(runs[0].get(key), (int, float)) for key, _ in _COLUMNS]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)).rstrip()

    return "\n".join([line(header), *(line(row) for row in body)])


def format_detail(detail: dict) -> str:
    run, options, failures = detail["run"], detail["options"], detail["failures"]
    lines = [f"run {run['run_id']}  kind {run['kind']}  status {run['status']}"
             + (f"  prefect flow run {run['prefect_flow_run_id']}" if run.get("prefect_flow_run_id") else ""),
             "", "options (as given):"]
    lines += [f"  {k} = {json.dumps(v, default=str)}" for k, v in sorted(options["params"].items())]
    lines += ["", "recorded with the run:"]
    lines += [f"  {k} = {_cell(v)}" for k, v in options.items() if k != "params"]
    lines += ["", "summary:",
              f"  started {_cell(run['started_at'])}, finished {_cell(run['finished_at'])}, "
              f"{_cell(run['duration_s'])} s",
              f"  {run['tokens']} tokens out, {run['prompt_tokens']} in, {_cell(run['tokens_per_s'])} tokens/s",
              "  rows: " + (", ".join(f"{t} {n}" for t, n in sorted(run["rows"].items())) or "none")]
    lines += [f"  {s['stage']:10} {s['calls']:6} calls {s['tokens']:8} tokens  mean {s['mean_latency_s']} s"
              for s in detail["stages"]]
    lines += ["", "failures:" if failures["error"] or failures["attempt_errors"] or failures["flags"] else
              "failures: none"]
    if failures["error"]:
        lines.append(f"  run: {failures['error']}")
    if failures["attempt_errors"]:
        lines.append(f"  {failures['requests_failed']} requests failed for good (the next run retries them); "
                     f"{run['failed_attempts']} failed tries:")
        lines += [f"  {e['tries']:5} x {e['stage']}: {e['error']}" for e in failures["attempt_errors"]]
    lines += [f"  flag {f['flag']} on {f['rows']} {f['target']} rows" for f in failures["flags"]]
    return "\n".join(lines)
