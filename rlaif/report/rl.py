"""Report sections on RL (issue #11): the over-optimisation monitor of each RL run, and the warnings it raised.

Read from migration 007: ``overopt_records`` (one row per measurement of the monitor on held-out prompts, step 0
before training: the mean sequence KL to the reference, the mean answer length and its drift, the proxy reward's
mean and the judge's), ``overopt_warnings`` (the proxy rose while the judge fell, against the judge's best earlier
record), and the trainer's own per-update metrics in 006's ``train_metrics`` (``reward``, ``kl`` and
``response_length`` over each update's rollouts). An RL run is a ``train_runs`` row of an RL estimator's kind, or
any training run with monitor records. With ``--run`` these sections cover that training run.

Why the held-out scores are drawn as changes since the first measurement: the proxy (a normalised reward model, a
rule) and the judge (its 1-10 score mapped onto [-1, 1]) have different scales, and what the monitor warns about
is their directions, so one axis of changes shows the divergence without a second y-axis.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rlaif.report.data import in_run, missing, one, rows, scope
from rlaif.report.figures import COLOURS, counts_axis
from rlaif.report.model import Note, Plot, Section, Stat, Table

if TYPE_CHECKING:
    import duckdb

    Con = duckdb.DuckDBPyConnection

RL_KINDS = ("ppo", "grpo", "rloo")  # train_runs.kind of the RL trainer: its estimator (rlaif/train/rl_step.py)
RUNS_LISTED = 30  # RL runs in the table
RUNS_DRAWN = 4  # RL runs drawn as small multiples (the most recent), a row of panels each
POINTS = 1000  # training steps drawn per run at most (evenly strided), as in the training curves
WARNINGS_LISTED = 50
STEP_METRICS = ("reward", "kl", "response_length")  # the trainer's metrics drawn beside the monitor's
WARN = COLOURS[3]
# Each update's rollouts: a line; the monitor's few measurements on held-out prompts: dashed, with markers. The
# proxy is the training reward measured again, so it shares the rollouts' colour. The legend follows this order.
STYLES = {"train": {"color": COLOURS[0], "linewidth": 1.1},
          "monitor": {"color": COLOURS[1], "marker": "o", "markersize": 3, "linestyle": "--"},
          "proxy": {"color": COLOURS[0], "marker": "s", "markersize": 3, "linestyle": "--"},
          "judge": {"color": COLOURS[2], "marker": "o", "markersize": 3, "linestyle": "--"}}
# The latest run's headline numbers: (column of _runs, label, format, what it is)
LATEST = (("kl", "KL to the reference", "{:.3g}", "mean sequence KL (nats) at the last measurement"),
          ("length_drift", "length drift", "x{:.2f}", "mean length at the last measurement / at the first"),
          ("proxy_change", "proxy change", "{:+.3f}", "proxy reward, last measurement minus first"),
          ("judge_change", "judge change", "{:+.3f}", "judge score, last measurement minus first"))
NO_RL = "No RL runs (`rlaif train ppo|grpo`) in {scope}."


def _quoted(names: tuple[str, ...]) -> str:
    """Constant names as a SQL list: 'a', 'b'."""
    return ", ".join(f"'{n}'" for n in names)


def _runs(con: "Con", run_id: str | None) -> list[dict]:
    """RL runs, newest first, with their monitor's first and last measurements and their warning count; the
    ``all_*`` columns count over every RL run in scope, listed or not."""
    return rows(con, f"""
        WITH rl AS (
            SELECT run_id, kind, status, started_at, steps_done, total_steps FROM train_runs
            WHERE (kind IN ({_quoted(RL_KINDS)}) OR run_id IN (SELECT run_id FROM overopt_records)) AND {in_run()}),
        measured AS (
            SELECT run_id, count(*) AS measurements, arg_max(kl, step) AS kl,
                   arg_max(length_drift, step) AS length_drift,
                   arg_max(proxy_score, step) - arg_min(proxy_score, step) AS proxy_change,
                   arg_max(judge_score, step) - arg_min(judge_score, step) AS judge_change,
                   any_value(proxy_source) AS proxy_source, any_value(judge_model) AS judge_model
            FROM overopt_records GROUP BY run_id),
        warned AS (SELECT run_id, count(*) AS warnings, min(step) AS first_warning FROM overopt_warnings
                   GROUP BY run_id)
        SELECT rl.*, coalesce(measurements, 0) AS measurements, kl, length_drift,
               proxy_change, judge_change, proxy_source, judge_model, coalesce(warnings, 0) AS warnings,
               first_warning, count(*) OVER () AS all_runs, sum(coalesce(measurements, 0)) OVER () AS all_measured,
               count(warnings) OVER () AS all_warned
        FROM rl LEFT JOIN measured USING (run_id) LEFT JOIN warned USING (run_id)
        ORDER BY started_at DESC, run_id LIMIT {RUNS_LISTED}""", run_id)


def _label(run: dict) -> str:
    """'ppo 3f00f782': the kind and the start of the run id's hash."""
    tail = run["run_id"].removeprefix("train-")[:8]
    return tail if tail.startswith(run["kind"]) else f"{run['kind']} {tail}"


def monitor(con: "Con", run_id: str | None) -> Section:
    """Per RL run: the proxy against the judge on held-out prompts, KL to the reference and length drift."""
    key, title = "train-rl-monitor", "RL: the over-optimisation monitor"
    absent = missing(con, "train_runs", "train_metrics", "overopt_records", "overopt_warnings")
    if absent:
        return Section.nodata(key, title, absent)
    runs = _runs(con, run_id)
    if not runs:
        return Section.nodata(key, title, NO_RL.format(scope=scope(run_id)))
    drawn = runs[:RUNS_DRAWN]
    ids = [r["run_id"] for r in drawn]
    records = rows(con, """
        SELECT run_id, step, kl, length_drift, proxy_score, judge_score FROM overopt_records
        WHERE run_id IN (SELECT unnest($runs)) ORDER BY run_id, step""", runs=ids)
    stride = max(1, math.ceil(max(r["steps_done"] or 0 for r in drawn) / POINTS))
    metrics = rows(con, f"""
        SELECT run_id, name, step, value FROM train_metrics
        WHERE run_id IN (SELECT unnest($runs)) AND phase = 'step' AND name IN ({_quoted(STEP_METRICS)})
              AND isfinite(value) AND step % $stride = 0
        ORDER BY run_id, name, step""", runs=ids, stride=stride)
    warned = rows(con, "SELECT run_id, step FROM overopt_warnings WHERE run_id IN (SELECT unnest($runs)) "
                       "ORDER BY run_id, step", runs=ids)
    latest = runs[0]
    shown = f"the {len(drawn)} most recent of {latest['all_runs']} RL runs" if latest["all_runs"] > len(drawn) else ""
    blocks = [
        Note("On held-out prompts (the eval split), before training, every few updates and after the last, the "
             "monitor answers each prompt once with the same seed, and measures: the proxy (the training "
             "reward), the judge's score, the mean sequence KL to the reference (k1, nats) and the answer length "
             "against the first measurement's. Over-optimisation (Gao et al. 2023) shows as the proxy rising "
             "while the judge falls, often with the KL and the length growing. The training rollouts' own "
             "reward, KL and length per update are drawn beside it." + (f" Drawn: {shown}." if shown else "")),
        Stat("rl_runs", "RL runs", latest["all_runs"]),
        Stat("rl_measurements", "monitor measurements", int(latest["all_measured"])),
        Stat("rl_warned_runs", "runs with warnings", latest["all_warned"]),
        *[Stat(f"rl_{column}", f"{label} (latest run)", latest[column], fmt, note=f"{latest['run_id']}: {note}")
          for column, label, fmt, note in LATEST],
        _table(runs),
    ]
    if records or metrics:  # runs that have not logged a step yet get no empty plot
        blocks.append(Plot(
            "train-rl-monitor", "One row per RL run, newest on top. Left to right: the reward of each update's "
            "rollouts; on held-out prompts, the proxy's and the judge's change since the first measurement "
            "(red lines: warnings); KL to the reference; answer length against the first measurement.",
            lambda fig: _draw(fig, drawn, records, metrics, warned), size=(9.6, 1.9 * len(drawn) + 0.8)))
    return Section(key, title, blocks)


def _table(runs: list[dict]) -> Table:
    return Table("rl-runs", ["run", "kind", "records", "KL", "drift", "Δ proxy", "Δ judge", "warnings",
                             "reward · judge"],
                 [[r["run_id"], r["kind"], r["measurements"], r["kl"], r["length_drift"], r["proxy_change"],
                   r["judge_change"], f"{r['warnings']} (step {r['first_warning']})" if r["warnings"] else "0",
                   f"{r['proxy_source'] or '—'} · {r['judge_model'] or '—'}"] for r in runs],
                 "Per RL run: the monitor's records; KL (nats) and length drift at the last record; the proxy's "
                 "and the judge's change (Δ) from the first record to the last; the warnings and the step of the "
                 "first; the reward optimised and the judge beside it.",
                 formats={"drift": "x{:.2f}", "Δ proxy": "{:+.3f}", "Δ judge": "{:+.3f}"})


def _metric(metrics: list[dict], run: str, name: str) -> tuple[list[int], list[float]]:
    """One trainer metric of one run over its steps."""
    points = [(m["step"], m["value"]) for m in metrics if m["run_id"] == run and m["name"] == name]
    return [s for s, _ in points], [v for _, v in points]


def _column(records: list[dict], run: str, column: str, *, change: bool = False) -> tuple[list[int], list[float]]:
    """One monitor column of one run over its steps (NULLs left out); as changes since its first value."""
    points = [(r["step"], r[column]) for r in records if r["run_id"] == run and r[column] is not None]
    first = points[0][1] if change and points else 0.0
    return [s for s, _ in points], [v - first for _, v in points]


def _draw(fig, runs: list[dict], records: list[dict], metrics: list[dict], warned: list[dict]) -> None:
    from matplotlib.lines import Line2D

    grid = fig.subplots(len(runs), 4, squeeze=False)
    for axes, run in zip(grid, runs, strict=True):
        _draw_run(axes, run["run_id"], records, metrics, [w["step"] for w in warned if w["run_id"] == run["run_id"]])
        axes[0].set_ylabel(_label(run), fontsize=8)
    for ax, name in zip(grid[0], ("reward (rollouts)", "held-out: change", "KL to the reference",
                                  "length (x first)"), strict=True):
        ax.set_title(name)
    for ax in grid.ravel():
        counts_axis(ax.xaxis)
    fig.supxlabel("update step", fontsize=9)
    handles = [Line2D([], [], **STYLES[name]) for name in STYLES] + [Line2D([], [], color=WARN, linestyle=":")]
    fig.legend(handles, ["training rollouts", "held-out monitor", "proxy (held-out)", "judge (held-out)",
                         "warning"], loc="outside upper center", ncols=5)


def _draw_run(axes, run: str, records: list[dict], metrics: list[dict], warned: list[int]) -> None:
    """One run's row of panels: rollout reward, held-out changes, KL, length; a panel with no data says so."""
    reward, change, kl, length = axes
    steps, lengths = _metric(metrics, run, "response_length")
    relative = [v / lengths[0] for v in lengths] if lengths and lengths[0] else []
    lines = {  # panel -> [(xs, ys, style)]
        reward: [(*_metric(metrics, run, "reward"), STYLES["train"])],
        change: [(*_column(records, run, "proxy_score", change=True), STYLES["proxy"]),
                 (*_column(records, run, "judge_score", change=True), STYLES["judge"])],
        kl: [(*_metric(metrics, run, "kl"), STYLES["train"]), (*_column(records, run, "kl"), STYLES["monitor"])],
        length: [(steps[:len(relative)], relative, STYLES["train"]),
                 (*_column(records, run, "length_drift"), STYLES["monitor"])],
    }
    for ax, series in lines.items():
        drawn = [(xs, ys, style) for xs, ys, style in series if xs]
        for xs, ys, style in drawn:
            ax.plot(xs, ys, **style)
        if not drawn:
            ax.text(0.5, 0.5, "nothing recorded", transform=ax.transAxes, ha="center", va="center", color="#888",
                    fontsize=8)
    for step in warned:
        change.axvline(step, color=WARN, linestyle=":", linewidth=1.2)
    change.axhline(0, color="#999", linewidth=0.6)
    length.axhline(1, color="#999", linewidth=0.6)


def warnings(con: "Con", run_id: str | None) -> Section:
    """The monitor's warnings: the step, the record it compared with, both changes and the message."""
    key, title = "train-overopt", "Over-optimisation warnings"
    absent = missing(con, "train_runs", "overopt_records", "overopt_warnings")
    if absent:
        return Section.nodata(key, title, absent)
    listed = rows(con, f"""
        SELECT w.run_id, w.step, w.since_step, w.proxy_delta, w.judge_delta, w.message, count(*) OVER () AS total
        FROM overopt_warnings w LEFT JOIN train_runs t USING (run_id) WHERE {in_run('w.run_id')}
        ORDER BY t.started_at DESC NULLS LAST, w.run_id, w.step LIMIT {WARNINGS_LISTED}""", run_id)
    if not listed:
        runs = _runs(con, run_id)
        if not runs:
            return Section.nodata(key, title, NO_RL.format(scope=scope(run_id)))
        n, measured = runs[0]["all_runs"], int(runs[0]["all_measured"])
        return Section.nodata(key, title, f"No warnings: in {n} RL run{'s' * (n != 1)} and {measured} monitor "
                              f"measurement{'s' * (measured != 1)}, the proxy never rose while the judge fell "
                              "(beyond the margins).")
    total = listed[0]["total"]
    warned = one(con, f"SELECT count(DISTINCT run_id) AS n FROM overopt_warnings WHERE {in_run()}", run_id)["n"]
    return Section(key, title, [
        Note("A warning: at this step the proxy reward was higher, and the judge's score lower, than at the "
             "earlier measurement where the judge scored best ('since step'), each by more than its margin."),
        Stat("overopt_warnings", "warnings", total),
        Stat("overopt_warned_runs", "runs warned", warned),
        Table("overopt-warnings", ["run", "step", "since step", "proxy delta", "judge delta", "message"],
              [[w["run_id"], w["step"], w["since_step"], w["proxy_delta"], w["judge_delta"], w["message"]]
               for w in listed],
              f"The first {len(listed)} of {total:,}, newest run first." if total > len(listed) else "",
              formats={"proxy delta": "{:+.3f}", "judge delta": "{:+.3f}"}),
    ])


SECTIONS = [monitor, warnings]
