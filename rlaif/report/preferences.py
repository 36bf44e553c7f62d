"""Report sections on the preference data: p_chosen, position bias, the length ratio, ties.

Read from ``comparisons`` (one row per pair and principle, judged in both orders; Lee et al. 2023 section 2.1.1)
and the ``preference_dataset`` view (per pair, principles averaged, ties left out).

Position bias, in this schema's terms: ``p_a_ab`` is P(a better) read with a shown as (A), ``p_a_ba`` the same
with a shown as (B). The option in the first slot, (A), is preferred when ``p_a_ab > 0.5`` in the first order
and when ``p_a_ba < 0.5`` in the second (there b sits in slot A). A judge without position bias prefers slot A
half the time; one that only reads positions prefers it always and is never consistent across orders.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlaif.report.data import columns, in_run, one, ratio, rows, scope, tables, wilson
from rlaif.report.figures import COLOURS, counts_axis
from rlaif.report.model import Note, Plot, Section, Stat, Table

if TYPE_CHECKING:
    import duckdb

    Con = duckdb.DuckDBPyConnection

TIE = 1e-9  # |p_a - 0.5| at or below this is a tie: the same tolerance as the preference_dataset view
P_BINS = 20  # histogram bins over p_chosen in [0.5, 1]
SCATTER_MAX = 5000  # points drawn in the position scatter; more only hide each other
RATIO_BINS = 24  # histogram bins over log2(chosen/rejected length) in [-3, 3]


def p_chosen(con: "Con", run_id: str | None) -> Section:
    """The judge's soft labels over the dataset's pairs: how sure it was of the answer it chose."""
    key, title = "pref-p-chosen", "p_chosen"
    summary = one(con, f"""
        SELECT count(*) AS n, count(p_chosen) AS with_p, avg(p_chosen) AS mean, median(margin) AS margin,
               count(*) FILTER (consistent) AS consistent
        FROM preference_dataset WHERE {in_run()}""", run_id)
    if not summary["n"]:
        judged = _pairs(con, run_id)
        why = f" ({judged['judged']:,} judged pairs, {judged['ties']:,} of them ties)" if judged["judged"] else ""
        return Section.nodata(key, title, f"No pairs in preference_dataset for {scope(run_id)}{why}.")
    hist = rows(con, f"""
        SELECT least(floor((p_chosen - 0.5) * 2 * {P_BINS}), {P_BINS} - 1)::INT AS bin, count(*) AS n
        FROM preference_dataset WHERE {in_run()} AND p_chosen IS NOT NULL GROUP BY bin ORDER BY bin""", run_id)
    counts = [0] * P_BINS
    for h in hist:
        counts[h["bin"]] = h["n"]
    votes = summary["n"] - summary["with_p"]  # engines without log-probs give votes, not probabilities
    return Section(key, title, [
        Stat("pairs", "pairs in preference_dataset", summary["n"]),
        *([Stat("pairs_by_vote", "pairs decided by votes (no p_chosen)", votes)] if votes else []),
        Stat("mean_p_chosen", "mean p_chosen", summary["mean"], "{:.3f}"),
        Stat("median_margin", "median margin |2p - 1|", summary["margin"], "{:.3f}"),
        Stat("consistent_pairs", "pairs consistent in every comparison", summary["consistent"]),
        *([Plot("pref-p-chosen", f"p_chosen of the dataset's pairs, {P_BINS} bins from 0.5 (no preference) to "
                "1.", lambda fig: _draw_p_hist(fig, counts))] if summary["with_p"] else []),
    ])


def _draw_p_hist(fig, counts: list[int]) -> None:
    ax = fig.subplots()
    edges = [0.5 + i / (2 * P_BINS) for i in range(P_BINS + 1)]
    ax.stairs(counts, edges, fill=True, color=COLOURS[0], alpha=0.85)
    ax.set(xlim=(0.5, 1.0), xlabel="p_chosen", ylabel="pairs")
    counts_axis(ax.yaxis)


def _pairs(con: "Con", run_id: str | None) -> dict:
    """Pairs judged (principles averaged as the dataset view does), ties among them, pairs with no usable verdict,
    and (from migration 005, where a pair's verdicts are grouped per judge model, constitution and mode into
    judgements with their flags) the judgements the flags leave out."""
    if "preference_candidates" in tables(con):
        return one(con, f"""
            SELECT count(*) AS pairs, count(decision) AS judged,
                   count(*) FILTER (abs(decision - 0.5) <= {TIE}) AS ties,
                   count(*) FILTER (decision IS NULL) AS unjudged, count(*) FILTER (flagged) AS flagged
            FROM preference_candidates WHERE {in_run()}""", run_id)
    return one(con, f"""
        WITH pairs AS (
            SELECT pair_id, judge_model, constitution_name, constitution_version, avg(p_a) AS p_a
            FROM comparisons WHERE {in_run()}
            GROUP BY pair_id, judge_model, constitution_name, constitution_version)
        SELECT count(*) AS pairs, count(p_a) AS judged, count(*) FILTER (abs(p_a - 0.5) <= {TIE}) AS ties,
               count(*) FILTER (p_a IS NULL) AS unjudged, NULL AS flagged
        FROM pairs""", run_id)


def position(con: "Con", run_id: str | None) -> Section:
    """Position consistency and the first-slot rate, over comparisons judged in both orders."""
    key, title = "pref-position", "Position consistency and first-slot rate"
    # From migration 005 a comparison has a judge mode; choice and chain-of-thought read both orders.
    mode = "coalesce(mode, 'choice')" if "mode" in columns(con, "comparisons") else "'choice'"
    per_mode = rows(con, f"""
        WITH c AS (
            SELECT {mode} AS mode, p_a_ab, p_a_ba,
                   sign(p_a_ab - 0.5) * (abs(p_a_ab - 0.5) > {TIE})::INT AS ab,
                   sign(p_a_ba - 0.5) * (abs(p_a_ba - 0.5) > {TIE})::INT AS ba  -- +1 a preferred, 0 neither
            FROM comparisons WHERE {in_run()} AND p_a_ab IS NOT NULL AND p_a_ba IS NOT NULL)
        SELECT mode, count(*) AS n, count(*) FILTER (ab <> 0 AND ab = ba) AS consistent,
               count(*) FILTER (ab = 1) + count(*) FILTER (ba = -1) AS first_slot,
               count(*) FILTER (ab <> 0) + count(*) FILTER (ba <> 0) AS decisive,
               sum(abs(p_a_ab - p_a_ba)) AS gap
        FROM c GROUP BY mode ORDER BY mode""", run_id)
    s = {k: sum(m[k] for m in per_mode) for k in ("n", "consistent", "first_slot", "decisive", "gap")}
    if not s["n"]:
        return Section.nodata(key, title, f"No comparisons judged in both orders in {scope(run_id)}.")
    points = rows(con, f"""
        SELECT p_a_ab, p_a_ba FROM comparisons
        WHERE {in_run()} AND p_a_ab IS NOT NULL AND p_a_ba IS NOT NULL
        ORDER BY comparison_id LIMIT {SCATTER_MAX}""", run_id)
    shown = f" ({len(points):,} of {s['n']:,} shown)" if s["n"] > len(points) else ""
    return Section(key, title, [
        Note("Consistent: both orders prefer the same answer. First slot: the answer shown as (A) is preferred, "
             "counted over both orders of every comparison. A reading within 1e-9 of 0.5 prefers neither answer "
             "and is left out of both. Intervals are Wilson 95%."),
        Stat("comparisons", "comparisons, both orders", s["n"]),
        Stat("position_consistency", "position consistency", ratio(s["consistent"], s["n"]), "{:.3f}",
             wilson(s["consistent"], s["n"])),
        Stat("first_slot_rate", "first-slot rate", ratio(s["first_slot"], s["decisive"]), "{:.3f}",
             wilson(s["first_slot"], s["decisive"])),
        Stat("order_gap", "mean gap between the orders", ratio(s["gap"], s["n"]), "{:.3f}",
             note="mean |P(a better | a first) - P(a better | a second)|"),
        *([Table("position-by-mode", ["judge mode", "comparisons", "consistency", "first-slot rate", "mean gap"],
                 [[m["mode"], m["n"], ratio(m["consistent"], m["n"]), ratio(m["first_slot"], m["decisive"]),
                   ratio(m["gap"], m["n"])] for m in per_mode])] if len(per_mode) > 1 else []),
        Plot("pref-position", "P(a better) with a shown first against with a shown second, one point per "
             f"comparison{shown}. Consistent verdicts lie in the shaded quadrants; a judge that only reads the "
             "position sits at the lower right.", lambda fig: _draw_position(fig, points), size=(4.6, 4.0)),
    ])


def _draw_position(fig, points: list[dict]) -> None:
    ax = fig.subplots()
    ax.fill_between([0.5, 1], 0.5, 1, color=COLOURS[2], alpha=0.12, linewidth=0)
    ax.fill_between([0, 0.5], 0, 0.5, color=COLOURS[2], alpha=0.12, linewidth=0)
    ax.scatter([p["p_a_ab"] for p in points], [p["p_a_ba"] for p in points], s=24 if len(points) < 300 else 8,
               alpha=0.6,
               color=COLOURS[0], edgecolors="none")
    ax.axhline(0.5, color="#888", linewidth=0.8)
    ax.axvline(0.5, color="#888", linewidth=0.8)
    ax.plot([0, 1], [0, 1], color="#bbb", linewidth=0.8, linestyle="--")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="P(a better), a shown as (A)", ylabel="P(a better), a shown as (B)")
    ax.set_aspect("equal")


def length_ratio(con: "Con", run_id: str | None) -> Section:
    """Chosen/rejected length ratio in characters: a judge that likes length shows it here."""
    key, title = "pref-length", "Chosen/rejected length ratio"
    s = one(con, f"""
        SELECT count(*) AS n, median(length(chosen) / length(rejected)) AS median_ratio,
               count(*) FILTER (length(chosen) > length(rejected)) AS longer,
               count(*) FILTER (length(chosen) <> length(rejected)) AS differ,
               count(*) FILTER (chosen = rejected) AS identical
        FROM preference_dataset WHERE {in_run()} AND length(rejected) > 0""", run_id)
    if not s["n"]:
        return Section.nodata(key, title, f"No pairs in preference_dataset for {scope(run_id)}.")
    hist = rows(con, f"""
        SELECT least(greatest(floor((log2(length(chosen) / length(rejected)) + 3) / 6 * {RATIO_BINS}), 0),
                     {RATIO_BINS} - 1)::INT AS bin, count(*) AS n
        FROM preference_dataset WHERE {in_run()} AND length(rejected) > 0 AND length(chosen) > 0
        GROUP BY bin ORDER BY bin""", run_id)
    counts = [0] * RATIO_BINS
    for h in hist:
        counts[h["bin"]] = h["n"]
    return Section(key, title, [
        Stat("median_length_ratio", "median chosen/rejected length", s["median_ratio"], "{:.2f}"),
        Stat("chosen_longer_rate", "chosen is the longer answer", ratio(s["longer"], s["differ"]), "{:.3f}",
             wilson(s["longer"], s["differ"]), note="over pairs whose answers differ in length; Wilson 95%"),
        Stat("identical_pairs", "pairs with identical texts", s["identical"]),
        Plot("pref-length", f"log2(chosen length / rejected length) in characters, {RATIO_BINS} bins over "
             "[-3, 3] (ratios beyond 8x fall in the end bins); right of 0 the chosen answer is longer.",
             lambda fig: _draw_ratio(fig, counts)),
    ])


def _draw_ratio(fig, counts: list[int]) -> None:
    ax = fig.subplots()
    edges = [-3 + 6 * i / RATIO_BINS for i in range(RATIO_BINS + 1)]
    ax.stairs(counts, edges, fill=True, color=COLOURS[0], alpha=0.85)
    ax.axvline(0, color=COLOURS[1], linewidth=1)
    ax.set(xlim=(-3, 3), xlabel="log2(chosen / rejected length)", ylabel="pairs")
    counts_axis(ax.yaxis)


def ties(con: "Con", run_id: str | None) -> Section:
    """Pairs the judge could not separate (left out of the dataset) and pairs with no usable verdict."""
    key, title = "pref-ties", "Ties"
    s = _pairs(con, run_id)
    if not s["pairs"]:
        return Section.nodata(key, title, f"No judged pairs in {scope(run_id)}.")
    return Section(key, title, [
        Note("Per pair, principles averaged as preference_dataset does. A tie (p_a within 1e-9 of 0.5) carries "
             "no preference and is left out of the dataset; an unjudged pair had no usable verdict in either "
             "order (an engine failure or an unreadable answer)."),
        Stat("judged_pairs", "pairs judged", s["judged"]),
        Stat("ties", "ties", s["ties"]),
        Stat("tie_rate", "tie rate", ratio(s["ties"], s["judged"]), "{:.3f}", wilson(s["ties"], s["judged"])),
        Stat("unjudged_pairs", "pairs without a verdict", s["unjudged"]),
        *([Stat("flagged_judgements", "left out by flags", s["flagged"],
                note="flagged pairs and verdicts: see preference_candidates.flags")] if s["flagged"] is not None
          else []),
    ])


SECTIONS = [p_chosen, position, length_ratio, ties]
