"""Report sections on how a generation run went: rows over time and tokens/s, engine latency, failures, flags.

Read from ``generations`` (one row per successful engine request), ``attempts`` (every try, failed ones too) and
``row_flags`` (data-quality flags). Each section is a function (read-only connection, run id or None) -> Section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlaif.report.data import elapsed_unit, in_run, missing, one, ratio, rows, scope
from rlaif.report.figures import COLOURS, hbar
from rlaif.report.model import Note, Plot, Section, Stat, Table

if TYPE_CHECKING:
    import duckdb

    Con = duckdb.DuckDBPyConnection

BINS = 48  # time bins of the throughput plot: enough to show a ramp-up, few enough to stay readable
ERROR_CHARS = 200  # an error message is cut to this in the failures table (the first line only)


def throughput(con: "Con", run_id: str | None) -> Section:
    """Cumulative rows per stage over time, and completion tokens per second in time bins."""
    key, title = "gen-throughput", "Rows over time and tokens/s"
    per_run = rows(con, f"""
        SELECT run_id, count(*) AS rows, coalesce(sum(completion_tokens), 0) AS tokens,
               min(created_at) AS first, max(created_at) AS last,
               date_diff('microsecond', min(created_at), max(created_at)) / 1e6 AS span_s
        FROM generations WHERE {in_run()} GROUP BY run_id ORDER BY first""", run_id)
    if not per_run:
        return Section.nodata(key, title, f"No generations in {scope(run_id)}.")
    t0, t1 = min(r["first"] for r in per_run), max(r["last"] for r in per_run)
    total_span = (t1 - t0).total_seconds()
    width = total_span / BINS if total_span > 0 else 1.0  # one instant: every row in the first bin
    binned = rows(con, f"""
        SELECT stage, least(floor(date_diff('microsecond', $t0, created_at) / 1e6 / $width), $bins - 1)::INT
                   AS bin,
               count(*) AS n, coalesce(sum(completion_tokens), 0) AS tokens
        FROM generations WHERE {in_run()} GROUP BY ALL ORDER BY bin""", run_id, t0=t0, width=width, bins=BINS)
    rows_total = sum(r["rows"] for r in per_run)
    tokens_total = sum(r["tokens"] for r in per_run)
    busy_s = sum(r["span_s"] for r in per_run)  # runs' own spans: idle time between runs is not counted
    blocks = [
        Stat("generations", "engine results stored", rows_total),
        Stat("completion_tokens", "completion tokens", tokens_total),
        Stat("tokens_per_s", "tokens/s (first to last row of each run)", ratio(tokens_total, busy_s), "{:,.1f}"),
        Stat("runs", "runs", len(per_run)),
        Plot("gen-throughput", "Left: rows stored per stage, cumulative. Right: completion tokens per second, "
             f"in {BINS} bins of {width:.3g} s.", lambda fig: _draw_throughput(fig, binned, width)),
    ]
    if len(per_run) > 1 or run_id is None:
        blocks.append(Table("runs-throughput", ["run", "rows", "tokens", "span s", "tokens/s"],
                            [[r["run_id"], r["rows"], r["tokens"], r["span_s"], ratio(r["tokens"], r["span_s"])]
                             for r in per_run]))
    return Section(key, title, blocks)


def _draw_throughput(fig, binned: list[dict], width: float) -> None:
    divisor, unit = elapsed_unit(width * BINS)
    left, right = fig.subplots(1, 2)
    stages = sorted({r["stage"] for r in binned})
    for stage in stages:
        counts = [0] * BINS
        for r in binned:
            if r["stage"] == stage:
                counts[r["bin"]] += r["n"]
        running, total = [], 0
        for c in counts:
            total += c
            running.append(total)
        left.step([(i + 1) * width / divisor for i in range(BINS)], running, where="post", label=stage)
    left.set(xlabel=f"time since first row ({unit})", ylabel="rows", title="rows per stage", ylim=(0, None))
    left.legend(loc="upper left")
    tokens = [0.0] * BINS
    for r in binned:
        tokens[r["bin"]] += r["tokens"]
    right.bar([(i + 0.5) * width / divisor for i in range(BINS)], [t / width for t in tokens],
              width=width / divisor, color=COLOURS[1])
    right.set(xlabel=f"time since first row ({unit})", ylabel="tokens/s", title="completion tokens/s")


def latency(con: "Con", run_id: str | None) -> Section:
    """Engine latency per stage: quantiles in a table and as box plots (whiskers at the 5th and 95th)."""
    key, title = "gen-latency", "Engine latency"
    stats = rows(con, f"""
        SELECT stage, count(*) AS n, avg(latency_s) AS mean,
               quantile_cont(latency_s, [0.05, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99]) AS q, max(latency_s) AS max
        FROM generations WHERE {in_run()} AND latency_s IS NOT NULL GROUP BY stage ORDER BY stage""", run_id)
    if not stats:
        return Section.nodata(key, title, f"No engine latencies recorded in {scope(run_id)}.")
    table = Table("latency", ["stage", "requests", "mean s", "p50 s", "p90 s", "p99 s", "max s"],
                  [[r["stage"], r["n"], r["mean"], r["q"][2], r["q"][4], r["q"][6], r["max"]]
                   for r in stats])
    return Section(key, title, [
        Note("Seconds per successful engine request as the engine recorded them; batched engines give each "
             "request in a batch the batch's time."),
        table,
        Plot("gen-latency", "Latency per stage: box from the 25th to the 75th percentile, line at the median, "
             "whiskers at the 5th and 95th.", lambda fig: _draw_latency(fig, stats),
             size=(7.5, max(1.8, 0.45 * len(stats) + 1.0))),
    ])


def _draw_latency(fig, stats: list[dict]) -> None:
    ax = fig.subplots()
    boxes = [{"label": r["stage"], "whislo": r["q"][0], "q1": r["q"][1], "med": r["q"][2], "q3": r["q"][3],
              "whishi": r["q"][5], "fliers": []} for r in reversed(stats)]  # first stage on top
    ax.bxp(boxes, orientation="horizontal", showfliers=False, patch_artist=True,
           boxprops={"facecolor": "#dbe6f3", "edgecolor": COLOURS[0]}, medianprops={"color": COLOURS[1]})
    positive = all(b["whislo"] > 0 for b in boxes)
    if positive and max(b["whishi"] for b in boxes) / min(b["whislo"] for b in boxes) > 50:
        ax.set_xscale("log")  # stages differ by orders of magnitude (a judge letter vs a long revision)
    ax.set_xlabel("seconds per request")


def failures(con: "Con", run_id: str | None) -> Section:
    """Failed engine attempts by stage and error, and which requests still have no result."""
    key, title = "gen-failures", "Failures"
    totals = one(con, f"""
        SELECT count(*) AS attempts, count(*) FILTER (status = 'failed') AS failed,
               count(DISTINCT key) FILTER (number > 1) AS retried,
               count(DISTINCT key) FILTER (status = 'failed' AND key NOT IN (SELECT key FROM generations))
                   AS unresolved
        FROM attempts WHERE {in_run()}""", run_id)
    if not totals["attempts"]:
        return Section.nodata(key, title, f"No engine attempts recorded in {scope(run_id)}.")
    if not totals["failed"]:
        return Section.nodata(key, title, f"No failed engine attempts in {scope(run_id)} "
                                          f"({totals['attempts']:,} attempts, all ok).")
    by_error = rows(con, f"""
        SELECT stage, left(split_part(coalesce(error, '(no message)'), chr(10), 1), {ERROR_CHARS}) AS error,
               count(*) AS attempts, count(DISTINCT key) AS requests, max(started_at) AS last
        FROM attempts WHERE {in_run()} AND status = 'failed' GROUP BY ALL ORDER BY attempts DESC, stage""",
                    run_id)
    by_stage = rows(con, f"""
        SELECT stage, count(*) AS attempts, count(*) FILTER (status = 'failed') AS failed
        FROM attempts WHERE {in_run()} GROUP BY stage ORDER BY stage""", run_id)
    return Section(key, title, [
        Stat("attempts", "engine attempts", totals["attempts"]),
        Stat("failed_attempts", "failed attempts", totals["failed"]),
        Stat("failure_rate", "failure rate", ratio(totals["failed"], totals["attempts"]), "{:.1%}"),
        Stat("retried_requests", "requests retried", totals["retried"]),
        Stat("unresolved_requests", "failed requests with no result yet", totals["unresolved"],
             note="rerunning the same command retries exactly these"),
        Table("failures-by-stage", ["stage", "attempts", "failed", "failure rate"],
              [[r["stage"], r["attempts"], r["failed"], ratio(r["failed"], r["attempts"])] for r in by_stage],
              formats={"failure rate": "{:.1%}"}),
        Table("failures-by-error", ["stage", "error (first line)", "attempts", "requests", "last seen"],
              [[r["stage"], r["error"], r["attempts"], r["requests"], r["last"]] for r in by_error]),
    ])


def flags(con: "Con", run_id: str | None) -> Section:
    """How many rows each data-quality flag hit, per target, with the values measured and thresholds used."""
    key, title = "gen-flags", "Data-quality flags"
    absent = missing(con, "row_flags")
    if absent:
        return Section.nodata(key, title, absent)
    hits = rows(con, f"""
        SELECT target, flag, count(*) AS n, min(value) AS min_value, median(value) AS median_value,
               max(value) AS max_value, string_agg(DISTINCT CAST(threshold AS VARCHAR), ', ') AS thresholds
        FROM row_flags WHERE {in_run()} GROUP BY target, flag ORDER BY target, n DESC, flag""", run_id)
    if not hits:
        return Section.nodata(key, title, f"No data-quality flags in {scope(run_id)}.")
    flagged = rows(con, f"SELECT target, count(DISTINCT target_id) AS n FROM row_flags WHERE {in_run()} "
                        "GROUP BY target ORDER BY target", run_id)
    labels = [f"{h['target']}: {h['flag']}" for h in hits]
    counts = [h["n"] for h in hits]
    return Section(key, title, [
        *[Stat(f"flagged_{f['target']}", f"{f['target']} rows flagged", f["n"]) for f in flagged],
        Table("flags", ["target", "flag", "rows", "min value", "median value", "max value", "threshold"],
              [[h["target"], h["flag"], h["n"], h["min_value"], h["median_value"], h["max_value"],
                h["thresholds"]] for h in hits]),
        Plot("gen-flags", "Rows hit by each flag (a row may carry several flags).",
             lambda fig: hbar(fig.subplots(), labels, counts, xlabel="rows"),
             size=(7.5, max(1.6, 0.3 * len(hits) + 0.8))),
    ])


def skipped(con: "Con", run_id: str | None) -> Section:
    """Input a run could not use: source rows that failed to read, prompts too long for the model's context."""
    key, title = "gen-skipped", "Skipped input"
    absent = missing(con, "bad_rows", "skipped_prompts")
    if absent:
        return Section.nodata(key, title, absent)
    bad = rows(con, f"""
        SELECT source, coalesce(column_name, '') AS column_name, left(reason, {ERROR_CHARS}) AS reason,
               count(*) AS n, min(row_number) AS first_row
        FROM bad_rows WHERE {in_run()} GROUP BY ALL ORDER BY n DESC, source LIMIT 20""", run_id)
    long = rows(con, f"""
        SELECT stage, round, left(reason, {ERROR_CHARS}) AS reason, count(*) AS n, max(tokens) AS tokens,
               max(context_length) AS context
        FROM skipped_prompts WHERE {in_run()} GROUP BY ALL ORDER BY n DESC, stage""", run_id)
    if not bad and not long:
        return Section.nodata(key, title, f"No bad source rows and no prompts skipped for length in {scope(run_id)}.")
    blocks: list = [Stat("bad_rows", "bad source rows skipped", sum(b["n"] for b in bad)),
                    Stat("skipped_prompts", "prompts skipped (context too short)", sum(x["n"] for x in long))]
    if bad:
        blocks.append(Table("bad-rows", ["source", "column", "reason", "rows", "first row"],
                            [[b["source"], b["column_name"], b["reason"], b["n"], b["first_row"]] for b in bad]))
    if long:
        blocks.append(Table("skipped-prompts", ["stage", "round", "reason", "prompts", "most tokens", "context"],
                            [[x["stage"], x["round"], x["reason"], x["n"], x["tokens"], x["context"]]
                             for x in long]))
    return Section(key, title, blocks)


SECTIONS = [throughput, latency, failures, skipped, flags]
