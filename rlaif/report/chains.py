"""Report sections on the critique/revision chains: principle usage, lengths per round, example chains.

Read from ``revisions`` (one row per chain and round, Bai et al. 2022 section 3), ``comparisons`` (the judge's
principle per pair) and ``generations`` (the engine's token counts, joined by each round's keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rlaif.report.data import cut, in_run, missing, one, rows, scope, tables
from rlaif.report.figures import COLOURS, counts_axis, hbar
from rlaif.report.model import Note, Plot, Section, Stat, Table, Texts

if TYPE_CHECKING:
    import duckdb

    Con = duckdb.DuckDBPyConnection

EXAMPLES = 3  # chains shown in full: enough to see what the model does, few enough to scroll past
TEXT_CHARS = 3000  # each text of an example is cut to this, so one runaway output cannot bloat the page
PROMPT_CHARS = 400
LENGTHS_MAX = 50_000  # completion lengths drawn in the histogram at most


def principles(con: "Con", run_id: str | None) -> Section:
    """How often each principle was drawn: for critique/revision rounds and for judge comparisons."""
    key, title = "gen-principles", "Principle usage"
    revised = rows(con, f"SELECT principle_id AS p, count(*) AS n FROM revisions WHERE {in_run()} "
                        "GROUP BY p ORDER BY n DESC, p", run_id)
    judged = rows(con, f"SELECT principle_id AS p, count(*) AS n FROM comparisons WHERE {in_run()} "
                       "GROUP BY p ORDER BY n DESC, p", run_id)
    if not revised and not judged:
        return Section.nodata(key, title, f"No critique/revision rounds or judge comparisons in {scope(run_id)}.")
    counts: dict[str, list[int]] = {}
    for i, part in enumerate((revised, judged)):
        for r in part:
            counts.setdefault(r["p"], [0, 0])[i] = r["n"]
    tallest = max(len(revised), len(judged))
    return Section(key, title, [
        Stat("principles_revision", "principles drawn for revisions", len(revised)),
        Stat("principles_judge", "principles drawn for judging", len(judged)),
        Plot("gen-principles", "Left: critique/revision rounds per principle. Right: judge comparisons per "
             "principle.", lambda fig: _draw_principles(fig, revised, judged),
             size=(7.5, max(1.8, 0.24 * tallest + 0.9))),
        Table("principles", ["principle", "critique/revision rounds", "judge comparisons"],
              [[p, n[0], n[1]] for p, n in sorted(counts.items(), key=lambda kv: (-sum(kv[1]), kv[0]))]),
    ])


def _draw_principles(fig, revised: list[dict], judged: list[dict]) -> None:
    left, right = fig.subplots(1, 2)
    for ax, part, name, colour in ((left, revised, "revision rounds", COLOURS[0]),
                                   (right, judged, "judge comparisons", COLOURS[2])):
        if part:
            hbar(ax, [r["p"] for r in part], [r["n"] for r in part], colour=colour, xlabel=name)
        else:
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"no {name}", ha="center", va="center", transform=ax.transAxes)


def lengths(con: "Con", run_id: str | None) -> Section:
    """Critique and revision length per round, in the engine's tokens; round 0 is the original answer."""
    key, title = "gen-lengths", "Critique and revision length per round"
    per_round = rows(con, f"""
        SELECT r.round, count(*) AS chains,
               quantile_cont(gc.completion_tokens, [0.25, 0.5, 0.75]) AS critique,
               quantile_cont(gr.completion_tokens, [0.25, 0.5, 0.75]) AS revision,
               avg(CASE WHEN r.revision = r.before THEN 1.0 ELSE 0.0 END)
                   FILTER (r.revision IS NOT NULL) AS unchanged
        FROM revisions r
        LEFT JOIN generations gc ON gc.key = r.critique_key
        LEFT JOIN generations gr ON gr.key = r.revision_key
        WHERE {in_run('r.run_id')} GROUP BY r.round ORDER BY r.round""", run_id)
    if not per_round:
        return Section.nodata(key, title, f"No critique/revision rounds in {scope(run_id)}.")
    original = one(con, f"""
        SELECT quantile_cont(g.completion_tokens, [0.25, 0.5, 0.75]) AS q, count(*) AS n
        FROM (SELECT DISTINCT response_key FROM revisions WHERE {in_run()}) r
        JOIN generations g ON g.key = r.response_key""", run_id)
    counted = original["q"] is not None or any(r["critique"] or r["revision"] for r in per_round)
    return Section(key, title, [
        Note("Tokens as the engine counted them (completion_tokens). 'Unchanged' is the share of rounds whose "
             "revision is identical to the text it revised."
             + ("" if counted else " These rounds have no generations rows, so no token counts to draw.")),
        Stat("original_median_tokens", "original answer, median tokens", _q(original["q"], 1), "{:,.1f}"),
        Stat("rounds", "critique/revision rounds", sum(r["chains"] for r in per_round)),
        Table("lengths", ["round", "chains", "critique median", "revision median", "unchanged"],
              [[r["round"], r["chains"], _q(r["critique"], 1), _q(r["revision"], 1), r["unchanged"]]
               for r in per_round], formats={"unchanged": "{:.0%}"}),
        *([Plot("gen-lengths", "Median tokens per round, with the 25th-75th percentile band; the original "
                "answer at round 0.", lambda fig: _draw_lengths(fig, original["q"], per_round))] if counted else []),
    ])


def _q(quantiles: list[float] | None, i: int) -> float | None:
    return None if quantiles is None else quantiles[i]


def _draw_lengths(fig, original: list[float] | None, per_round: list[dict]) -> None:
    ax = fig.subplots()
    xs = [r["round"] for r in per_round]
    for name, colour in (("critique", COLOURS[1]), ("revision", COLOURS[0])):
        qs = [r[name] for r in per_round]
        if any(q is None for q in qs):
            continue
        ax.plot(xs, [q[1] for q in qs], marker="o", color=colour, label=name)
        ax.fill_between(xs, [q[0] for q in qs], [q[2] for q in qs], color=colour, alpha=0.15, linewidth=0)
    if original is not None:
        ax.errorbar([0], [original[1]], yerr=[[original[1] - original[0]], [original[2] - original[1]]],
                    fmt="s", color=COLOURS[2], capsize=3, label="original")
    ax.set_xticks(range(0, max(xs) + 1))
    ax.set(xlabel="round", ylabel="tokens")
    ax.legend(loc="best")


def examples(con: "Con", run_id: str | None) -> Section:
    """A few whole chains side by side: the original answer, each round's critique and revision, its principle."""
    key, title = "gen-examples", "Example chains"
    chains = rows(con, f"""
        SELECT chain_id, any_value(prompt_id) AS prompt_id, count(*) AS rounds FROM revisions
        WHERE {in_run()} GROUP BY chain_id ORDER BY chain_id LIMIT {EXAMPLES}""", run_id)
    if not chains:
        return Section.nodata(key, title, f"No critique/revision chains in {scope(run_id)}.")
    blocks: list = [Note(f"{len(chains)} chains, picked by chain id (a content hash, so a fixed but arbitrary "
                         "sample). Texts longer than a few thousand characters are cut.")]
    for chain in chains:
        blocks += _chain_blocks(con, chain)
    return Section(key, title, blocks)


def _chain_blocks(con: "Con", chain: dict) -> list[Texts]:
    prompt = one(con, "SELECT any_value(text) AS text FROM prompts WHERE prompt_id = $pid",
                 pid=chain["prompt_id"])["text"]
    rounds = rows(con, """
        SELECT round, principle_id, original, before, critique, revision, model, constitution_name
        FROM revisions WHERE chain_id = $chain ORDER BY round""", chain=chain["chain_id"])
    flagged = _round_flags(con, chain["chain_id"])
    out = []
    for r in rounds:
        first, last = r["round"] == 1, r["round"] == len(rounds)
        heading = f"Prompt: {cut(prompt, PROMPT_CHARS)}" if first else f"Round {r['round']}"
        note = (f"round {r['round']} of {chain['rounds']} · principle {r['principle_id']}"
                + (f" · model {r['model']} · constitution {r['constitution_name']}" if first else "")
                + (f" · flags: {flagged[r['round']]}" if r["round"] in flagged else "")
                + (_verdict(con, chain["chain_id"]) if last else ""))
        before = ("original", r["original"]) if first else (f"before (revision {r['round'] - 1})", r["before"])
        out.append(Texts(heading, [(before[0], cut(before[1], TEXT_CHARS)),
                                   (f"critique ({r['principle_id']})", cut(r["critique"], TEXT_CHARS)),
                                   ("revision", cut(r["revision"], TEXT_CHARS))], note))
    return out


def _round_flags(con: "Con", chain_id: str) -> dict[int, str]:
    """The data-quality flags on each round's revision (row_flags target 'revision', id 'chain_id:round')."""
    if "row_flags" not in tables(con):
        return {}
    found = rows(con, """
        SELECT target_id, string_agg(flag, ', ' ORDER BY flag) AS flags FROM row_flags
        WHERE target = 'revision' AND starts_with(target_id, $prefix) GROUP BY target_id""",
                 prefix=f"{chain_id}:")
    return {int(f["target_id"].rsplit(":", 1)[1]): f["flags"] for f in found
            if f["target_id"].rsplit(":", 1)[1].isdigit()}


def _verdict(con: "Con", chain_id: str) -> str:
    """The judge's verdict on the chain's pair (original against final revision), when it was judged."""
    v = one(con, """
        SELECT avg(CASE WHEN source_b = 'revision' THEN 1 - p_a WHEN source_a = 'revision' THEN p_a END) AS p,
               count(*) AS n
        FROM comparisons WHERE chain_id = $chain AND p_a IS NOT NULL""", chain=chain_id)
    if v["p"] is None:
        return ""
    return (f" · judge: P(final revision better than the original) = {v['p']:.2f} over {v['n']} "
            f"principle{'s' if v['n'] != 1 else ''}")


def sft_dataset(con: "Con", run_id: str | None) -> Section:
    """What made it into the SFT dataset: final candidates, those the flags or emptiness left out, the splits."""
    key, title = "gen-sft-dataset", "SFT dataset"
    absent = missing(con, "sft_candidates")
    if absent:
        return Section.nodata(key, title, absent)
    s = one(con, f"""
        SELECT count(*) FILTER (final) AS candidates, count(*) FILTER (final AND len(flags) > 0) AS flagged,
               count(*) FILTER (final AND (completion IS NULL OR length(trim(completion)) = 0)) AS empty,
               count(*) FILTER (final AND helpful) AS helpful
        FROM sft_candidates WHERE {in_run()}""", run_id)
    if not s["candidates"]:
        return Section.nodata(key, title, f"No SFT candidates in {scope(run_id)}.")
    kept = rows(con, f"SELECT split, count(*) AS n, median(length(completion)) AS chars FROM sft_dataset "
                     f"WHERE {in_run()} GROUP BY split ORDER BY split", run_id)
    lengths = [r["n"] for r in rows(con, f"SELECT length(completion) AS n FROM sft_dataset WHERE {in_run()} "
                                         f"ORDER BY chain_id LIMIT {LENGTHS_MAX}", run_id)]
    rounds = one(con, f"SELECT count(*) AS n FROM sft_rounds WHERE {in_run()}", run_id)["n"]
    blocks: list = [
        Note("A candidate is a chain's final revision, or a helpful prompt's unrevised answer; sft_dataset keeps "
             "those with no flag and some text. sft_rounds has every round's revision, filtered the same way."),
        Stat("sft_rows", "rows in sft_dataset", sum(k["n"] for k in kept)),
        Stat("sft_candidates", "final candidates", s["candidates"]),
        Stat("sft_flagged", "left out by flags", s["flagged"]),
        Stat("sft_empty", "left out empty", s["empty"]),
        Stat("sft_helpful", "helpful, kept unrevised", s["helpful"]),
        Stat("sft_rounds", "rows in sft_rounds", rounds),
        Table("sft-splits", ["split", "rows", "median characters"], [[k["split"], k["n"], k["chars"]] for k in kept]),
    ]
    if lengths:
        blocks.append(Plot("gen-sft-dataset", "Completion length in characters over sft_dataset's rows.",
                           lambda fig: _draw_hist(fig, lengths, "completion characters")))
    return Section(key, title, blocks)


def _draw_hist(fig, values: list[int], xlabel: str) -> None:
    ax = fig.subplots()
    ax.hist(values, bins=min(40, max(5, len(set(values)))), color=COLOURS[0], edgecolor="white", linewidth=0.5)
    ax.set(xlabel=xlabel, ylabel="rows")
    counts_axis(ax.yaxis)


SECTIONS = [principles, lengths, sft_dataset, examples]
