"""Report sections on the judge's own checks: canary results and labelled judge evaluations (issue #9).

Read from ``canary_results`` (pairs with a known answer, judged at the start of every run and once per few hundred
pairs, so that a broken judge shows), ``judge_evals`` (one row per ``rlaif judge eval`` run and mode, each metric
with its 95% interval as stored) and ``judge_eval_pairs`` (what the judge said about each labelled pair: the
calibration curve is drawn from these).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlaif.report.data import in_run, missing, one, ratio, rows, scope, wilson
from rlaif.report.figures import COLOURS, counts_axis, reliability
from rlaif.report.model import Note, Plot, Section, Stat, Table

if TYPE_CHECKING:
    import duckdb

    Con = duckdb.DuckDBPyConnection

EVALS_SHOWN = 12  # the most recent evaluations listed in the tables
CAL_BINS = 10  # equal-width bins of P(response_a better), as judge eval's ECE uses
# Agreement-type metrics drawn with their intervals: (column in judge_evals, label)
AGREEMENT = (("agreement", "debiased (both orders)"), ("agreement_first", "a shown first only"),
             ("agreement_second", "a shown second only"), ("longer", "baseline: always the longer"),
             ("shorter", "baseline: always the shorter"))
BIAS = (("consistency", "position consistency"), ("first_slot_rate", "first-slot rate"), ("brier", "Brier"),
        ("ece", "ECE"), ("when_label_longer", "agreement, label longer"),
        ("when_label_shorter", "agreement, label shorter"))


def canaries(con: "Con", run_id: str | None) -> Section:
    """How often the judge got the canary pairs (known answers) right, per canary and mode."""
    key, title = "pref-canaries", "Canary results"
    absent = missing(con, "canary_results")
    if absent:
        return Section.nodata(key, title, absent)
    s = one(con, f"""
        SELECT count(*) AS checks, count(correct) AS readable, count(*) FILTER (correct) AS correct,
               count(consistent) AS both, count(*) FILTER (consistent) AS consistent,
               count(DISTINCT run_id) AS runs
        FROM canary_results WHERE {in_run()}""", run_id)
    if not s["checks"]:
        return Section.nodata(key, title, f"No canary checks in {scope(run_id)}.")
    per = rows(con, f"""
        SELECT mode, canary_id, count(*) AS checks, avg(CASE WHEN correct THEN 1.0 WHEN NOT correct THEN 0.0 END)
                   AS correct, avg(coalesce(p_correct, vote_correct)) AS mean_p,
               min(coalesce(p_correct, vote_correct)) AS min_p, count(*) - count(correct) AS unreadable
        FROM canary_results WHERE {in_run()} GROUP BY ALL ORDER BY mode, canary_id""", run_id)
    points = rows(con, f"""
        SELECT mode, row_number() OVER (PARTITION BY mode ORDER BY created_at, seq, canary_result_id) AS n,
               coalesce(p_correct, vote_correct) AS p
        FROM canary_results WHERE {in_run()} AND coalesce(p_correct, vote_correct) IS NOT NULL
        ORDER BY mode, n""", run_id)
    blocks = [
        Note("A canary is a pair with a known better answer. 'Correct' means the judge preferred it; p is the "
             "probability it gave that answer (or its share of votes on engines without log-probs)."),
        Stat("canary_checks", "canary checks", s["checks"]),
        Stat("canary_correct_rate", "correct", ratio(s["correct"], s["readable"]), "{:.3f}",
             wilson(s["correct"], s["readable"])),
        Stat("canary_unreadable", "unreadable answers", s["checks"] - s["readable"]),
        Stat("canary_consistency", "consistent across orders", ratio(s["consistent"], s["both"]), "{:.3f}",
             wilson(s["consistent"], s["both"])),
        Table("canaries", ["mode", "canary", "checks", "correct", "mean p", "lowest p", "unreadable"],
              [[r["mode"], r["canary_id"], r["checks"], r["correct"], r["mean_p"], r["min_p"], r["unreadable"]]
               for r in per], formats={"correct": "{:.0%}"}),
    ]
    if points:
        blocks.append(Plot("pref-canaries", "P(known-better answer) at each canary check, in order, per judge "
                           "mode; below 0.5 the judge got it wrong.", lambda fig: _draw_canaries(fig, points)))
    return Section(key, title, blocks)


def _draw_canaries(fig, points: list[dict]) -> None:
    ax = fig.subplots()
    modes = sorted({p["mode"] for p in points})
    for i, mode in enumerate(modes):
        mine = [p for p in points if p["mode"] == mode]
        ax.scatter([p["n"] for p in mine], [p["p"] for p in mine], s=16, color=COLOURS[i % len(COLOURS)],
                   label=mode, alpha=0.7, edgecolors="none")
    ax.axhline(0.5, color=COLOURS[3], linewidth=0.8)
    ax.set(ylim=(0, 1), xlabel="canary check", ylabel="P(known-better answer)")
    counts_axis(ax.xaxis)
    ax.legend(loc="lower left")


def _with_interval(row: dict, column: str, fmt: str = "{:.3f}") -> str | None:
    if row.get(column) is None:
        return None
    lo, hi = row.get(f"{column}_lo"), row.get(f"{column}_hi")
    text = fmt.format(row[column])
    return text if lo is None or hi is None else f"{text} [{lo:.2f}, {hi:.2f}]"


def judge_eval(con: "Con", run_id: str | None) -> Section:
    """Labelled judge evaluations: agreement with intervals, position bias, calibration, length baselines."""
    key, title = "pref-judge-eval", "Judge evaluation"
    absent = missing(con, "judge_evals", "judge_eval_pairs")
    if absent:
        return Section.nodata(key, title, absent)
    evals = rows(con, f"SELECT * FROM judge_evals WHERE {in_run()} ORDER BY created_at DESC, mode "
                      f"LIMIT {EVALS_SHOWN}", run_id)
    if not evals:
        return Section.nodata(key, title, f"No labelled judge evaluation (`rlaif judge eval`) in {scope(run_id)}.")
    latest = sorted((e for e in evals if e["run_id"] == evals[0]["run_id"]), key=lambda e: e["mode"])
    curves = _calibration(con, latest[0]["run_id"])
    head = ["eval run", "mode", "pairs", "decided"]
    return Section(key, title, [
        Note(f"Agreement with the labels, with the stored 95% intervals. The figures show the latest evaluation "
             f"({latest[0]['run_id']}, {latest[0]['pairs_source'] or 'pairs'})."),
        *[Stat(f"agreement_{e['mode']}", f"agreement, {e['mode']}", e["agreement"], "{:.3f}",
               _interval(e, "agreement")) for e in latest],
        Table("judge-eval-agreement", head + [label for _, label in AGREEMENT],
              [[e["run_id"], e["mode"], e["pairs"], e["decided"], *[_with_interval(e, c) for c, _ in AGREEMENT]]
               for e in evals]),
        Table("judge-eval-bias", head + [label for _, label in BIAS],
              [[e["run_id"], e["mode"], e["pairs"], e["decided"], *[_with_interval(e, c) for c, _ in BIAS]]
               for e in evals]),
        Plot("pref-judge-eval", "Agreement with the labels per judge mode, with 95% intervals, beside the "
             "always-longer and always-shorter baselines.", lambda fig: _draw_agreement(fig, latest),
             size=(7.5, 0.5 * len(AGREEMENT) + 1.2)),
        *([Plot("pref-calibration", f"Calibration: pairs binned by P(response_a better) into {CAL_BINS} equal "
                "bins, against how often response_a was the labelled better; the diagonal is perfect "
                "calibration. Numbers are pairs per bin.", lambda fig: reliability(fig.subplots(), curves),
                size=(4.6, 4.2))] if curves else []),
    ])


def _interval(row: dict, column: str) -> tuple[float, float] | None:
    lo, hi = row.get(f"{column}_lo"), row.get(f"{column}_hi")
    return None if lo is None or hi is None else (lo, hi)


def _calibration(con: "Con", eval_run: str) -> dict[str, list[tuple[float, float, int]]]:
    """Per mode, (mean p_a, share labelled A, pairs) for each non-empty bin of the eval's pairs."""
    bins = rows(con, f"""
        SELECT mode, least(floor(p_a * {CAL_BINS}), {CAL_BINS} - 1)::INT AS bin, avg(p_a) AS p,
               avg(CASE WHEN label = 'A' THEN 1.0 ELSE 0.0 END) AS observed, count(*) AS n
        FROM judge_eval_pairs WHERE run_id = $eval AND p_a IS NOT NULL AND label IN ('A', 'B')
        GROUP BY ALL ORDER BY mode, bin""", eval=eval_run)
    curves: dict[str, list[tuple[float, float, int]]] = {}
    for b in bins:
        curves.setdefault(b["mode"], []).append((b["p"], b["observed"], b["n"]))
    return curves


def _draw_agreement(fig, evals: list[dict]) -> None:
    ax = fig.subplots()
    labels = [label for _, label in AGREEMENT]
    step = 0.7 / max(len(evals), 1)
    for i, e in enumerate(evals):
        ys, xs, lo, hi = [], [], [], []
        for j, (column, _) in enumerate(AGREEMENT):
            if e.get(column) is None:
                continue
            ys.append(len(AGREEMENT) - 1 - j + 0.35 - (i + 0.5) * step)
            xs.append(e[column])
            lo.append(e[column] - (e.get(f"{column}_lo") if e.get(f"{column}_lo") is not None else e[column]))
            hi.append((e.get(f"{column}_hi") if e.get(f"{column}_hi") is not None else e[column]) - e[column])
        ax.errorbar(xs, ys, xerr=[lo, hi], fmt="o", capsize=3, color=COLOURS[i % len(COLOURS)], label=e["mode"])
    ax.set_yticks(range(len(AGREEMENT)), labels[::-1])
    ax.axvline(0.5, color="#999", linewidth=0.8, linestyle="--")
    ax.set(xlim=(0, 1), xlabel="agreement with the labels")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right")


SECTIONS = [canaries, judge_eval]
