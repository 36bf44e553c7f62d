"""Report sections on training: the runs, their curves over steps, win rates against the base.

Read from migration 006 (issue #10): ``train_runs`` (one row per training run), ``train_metrics`` (long rows: run,
phase, step, name, value; phase 'step' is a step's own batch, 'train' and 'eval' a pass over a split, step 0
before training), ``winrate_evals`` and ``winrate_judgements`` (`rlaif eval winrate`), with each evaluation's
method from 007's view ``policy_comparison`` (best-of-N beside PPO and DPO) where the database has it. The RL
monitor and its warnings are in ``rl.py``. With ``--run`` these sections cover that run: a training run's id
(``train-...``) for the runs and curves and the evaluations of its final model, an evaluation's run id for its
win rates.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rlaif.report.data import in_run, missing, rows, scope, tables
from rlaif.report.figures import COLOURS
from rlaif.report.model import Note, Plot, Section, Stat, Table

if TYPE_CHECKING:
    import duckdb

    Con = duckdb.DuckDBPyConnection

RUNS_SHOWN = 6  # training runs drawn in the curves (the most recent); more lines would hide each other
PANELS = 12  # metric panels drawn; the rest are named in one line
POINTS = 1000  # steps drawn per run at most (evenly strided); the stored rows are all kept
# Metrics the issue asks to see first, in this order; any other metric follows alphabetically.
# The RL trainer's (docs/rl.md) follow the reward: its losses, entropy, the KL coefficient, EOS and clip rates.
FIRST = ("loss", "reward_accuracy", "accuracy", "reward_margin", "logp_margin", "kl", "reward", "length",
         "response_length", "policy_loss", "value_loss", "entropy", "kl_coef", "eos_rate", "clip_frac", "approx_kl",
         "reward_chosen", "reward_rejected", "perplexity", "brier", "ece", "lr", "grad_norm", "tokens_per_s")
# Bookkeeping, drawn only if there is room; advantage_mean is ~0 by construction (whitened or group-centred).
LAST = ("tokens", "step_s", "pairs", "answers", "step_cpu_s", "rollout_s", "update_s", "rollout_tokens",
        "advantage_mean")
EVALS_SHOWN = 12  # win-rate evaluations listed and drawn (the most recent)
PHASE_STYLE = {"step": {"linewidth": 1.1}, "train": {"linestyle": "--", "marker": "s", "markersize": 3},
               "eval": {"linestyle": ":", "marker": "o", "markersize": 3}}


def train_runs(con: "Con", run_id: str | None) -> Section:
    """Every training run: kind, status, base model, dataset and its version, steps, where the model went."""
    key, title = "train-runs", "Training runs"
    absent = missing(con, "train_runs")
    if absent:
        return Section.nodata(key, title, absent)
    listed = rows(con, f"""
        SELECT run_id, kind, status, base_model, dataset, left(data_version, 10) AS version, train_rows,
               eval_rows, steps_done || ' / ' || total_steps AS steps, resumes, device || ' ' || precision AS device,
               started_at, final_path, left(error, 160) AS error
        FROM train_runs WHERE {in_run()} ORDER BY started_at DESC LIMIT 30""", run_id)
    if not listed:
        return Section.nodata(key, title, f"No training runs in {scope(run_id)}.")
    return Section(key, title, [
        Stat("train_runs", "training runs", len(listed)),
        Stat("train_completed", "completed", sum(r["status"] == "completed" for r in listed)),
        Table("train-runs", ["run", "kind", "status", "base model", "dataset", "data version", "train rows",
                             "eval rows", "steps done", "resumes", "device", "started (UTC)", "model folder",
                             "error"],
              [[r["run_id"], r["kind"], r["status"], r["base_model"], r["dataset"], r["version"], r["train_rows"],
                r["eval_rows"], r["steps"], r["resumes"], r["device"], r["started_at"], r["final_path"],
                r["error"]] for r in listed]),
    ])


def _metric_order(name: str) -> tuple[int, str]:
    if name in FIRST:
        return (FIRST.index(name), name)
    return (len(FIRST) + 1 + LAST.index(name), name) if name in LAST else (len(FIRST), name)


def curves(con: "Con", run_id: str | None) -> Section:
    """Loss, reward accuracy and margins, KL, reward and length over steps: one panel per metric, a line per run."""
    key, title = "train-curves", "Training curves"
    absent = missing(con, "train_runs", "train_metrics")
    if absent:
        return Section.nodata(key, title, absent)
    runs = rows(con, f"""
        SELECT r.run_id, r.kind, max(m.step) AS steps FROM train_runs r JOIN train_metrics m USING (run_id)
        WHERE {in_run('r.run_id')} GROUP BY r.run_id, r.kind, r.started_at ORDER BY r.started_at DESC
        LIMIT {RUNS_SHOWN}""", run_id)
    if not runs:
        return Section.nodata(key, title, f"No training metrics in {scope(run_id)}.")
    stride = max(1, math.ceil(max(r["steps"] or 0 for r in runs) / POINTS))
    points = rows(con, """
        SELECT run_id, phase, name, step, value FROM train_metrics
        WHERE run_id IN (SELECT unnest($runs)) AND value IS NOT NULL AND (phase <> 'step' OR step % $stride = 0)
        ORDER BY run_id, phase, name, step""", runs=[r["run_id"] for r in runs], stride=stride)
    names = sorted({p["name"] for p in points}, key=_metric_order)
    shown, rest = names[:PANELS], names[PANELS:]
    labels = {r["run_id"]: f"{r['kind']} {r['run_id'].removeprefix('train-')[:8]}" for r in runs}
    blocks: list = [Note("Solid: each step's own batch; dashed squares: a pass over the training split; dotted "
                         "circles: the eval split (step 0 is before training). "
                         + (f"Every {stride}th step is drawn. " if stride > 1 else "")
                         + (f"Not drawn: {', '.join(rest)}." if rest else ""))]
    blocks += [Stat(f"final_{name}", f"last {name} ({labels[runs[0]['run_id']]})", value, "{:.4g}")
               for name, value in _finals(points, runs[0]["run_id"]) if name in ("loss", "reward_accuracy")]
    blocks.append(Plot("train-curves", f"Metrics over optimizer steps for the {len(runs)} most recent "
                       "training runs.", lambda fig: _draw_curves(fig, points, shown, labels),
                       size=(7.5, 2.1 * math.ceil(len(shown) / 3) + 0.5)))
    return Section(key, title, blocks)


def _finals(points: list[dict], run: str) -> list[tuple[str, float]]:
    """The last 'step' value of each metric of one run."""
    last: dict[str, tuple[int, float]] = {}
    for p in points:
        if p["run_id"] == run and p["phase"] == "step" and p["step"] >= last.get(p["name"], (-1, 0.0))[0]:
            last[p["name"]] = (p["step"], p["value"])
    return [(name, v) for name, (_, v) in sorted(last.items())]


def _draw_curves(fig, points: list[dict], names: list[str], labels: dict[str, str]) -> None:
    from matplotlib.lines import Line2D

    colour = {run: COLOURS[i % len(COLOURS)] for i, run in enumerate(labels)}
    columns = 3
    axes = fig.subplots(math.ceil(len(names) / columns), columns, squeeze=False).ravel()
    series: dict[tuple[str, str, str], tuple[list[int], list[float]]] = {}
    for p in points:
        xs, ys = series.setdefault((p["name"], p["run_id"], p["phase"]), ([], []))
        xs.append(p["step"])
        ys.append(p["value"])
    for ax, name in zip(axes, names, strict=False):
        for (metric, run, phase), (xs, ys) in series.items():
            if metric == name:
                ax.plot(xs, ys, color=colour[run], **PHASE_STYLE.get(phase, {"linestyle": "-."}))
        ax.set_title(name)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    fig.supxlabel("step", fontsize=9)
    handles = [Line2D([], [], color=colour[r]) for r in labels]
    fig.legend(handles, list(labels.values()), loc="outside upper center", ncols=min(len(labels), 4))


def win_rate(con: "Con", run_id: str | None) -> Section:
    """The policy against its base: win rate with its interval, and the length-controlled one."""
    key, title = "train-win-rate", "Win rate against the base"
    absent = missing(con, "winrate_evals", "winrate_judgements")
    if absent:
        return Section.nodata(key, title, absent)
    evals = rows(con, f"""
        SELECT e.*, {_method(con)} AS method FROM winrate_evals e WHERE {_evals_in_run()}
        ORDER BY e.created_at DESC, e.eval_id LIMIT {EVALS_SHOWN}""", run_id)
    if not evals:
        return Section.nodata(key, title, "No win-rate evaluations (`rlaif eval winrate`, `rlaif eval best-of-n`) "
                              f"in {scope(run_id)}.")
    latest = evals[0]
    judged = rows(con, """
        SELECT p_policy, len_policy - len_base AS diff FROM winrate_judgements
        WHERE eval_id = $eval AND p_policy IS NOT NULL ORDER BY prompt_id""", eval=latest["eval_id"])
    circular = [Note(f"Latest evaluation: {latest['judge_warning'].removeprefix('warning: ')}")] \
        if latest.get("judge_warning") else []
    return Section(key, title, [
        Note("Win rate: mean P(policy better) by the evaluation role's judge, 95% interval. Length-controlled: the "
             "same with the length difference regressed out (Dubois et al. 2024), its interval by bootstrap."),
        *circular,
        Stat("win_rate", "win rate (latest)", latest["win_rate"], "{:.3f}",
             _pair(latest["win_rate_low"], latest["win_rate_high"])),
        Stat("lc_win_rate", "length-controlled win rate (latest)", latest["lc_win_rate"], "{:.3f}",
             _pair(latest["lc_win_rate_low"], latest["lc_win_rate_high"])),
        Stat("winrate_prompts", "prompts judged (latest)", latest["prompts"]),
        *_comparison(con, run_id),
        Table("win-rates", ["policy", "method", "base", "judge", "split", "prompts", "win rate [95%]",
                            "length-controlled", "wins / ties / losses", "policy chars", "base chars"],
              [[e["policy"], e["method"], e["base"], _judge(e), e["split"], e["prompts"],
                _rate(e, "win_rate"), _rate(e, "lc_win_rate"), _counts(e), e["mean_len_policy"],
                e["mean_len_base"]] for e in evals], "Every evaluation, newest first."),
        Plot("train-win-rate", "Left: win rate and length-controlled win rate of each evaluation, with 95% "
             "intervals (0.5: no better than the base). Right, the latest evaluation: P(policy better) per prompt "
             "against how much longer the policy's answer was.", lambda fig: _draw_win(fig, evals, judged),
             size=(7.5, max(2.6, 0.5 * len(evals) + 1.4))),
    ])


def _judge(e: dict) -> str:
    """The judge column: model, mode, and whether it judged its own base or labels (storage/012)."""
    mode = f" ({e['judge_mode']})" if e.get("judge_mode") else ""
    marks = [m for m, hit in (("is the base", e.get("judge_is_base")),
                              ("labelled the data", e.get("judge_is_labeller"))) if hit]
    return f"{e['judge_model']}{mode}" + (f": {', '.join(marks)}" if marks else "")


def _evals_in_run() -> str:
    """The run filter of evaluations: an evaluation's own run, or a training run whose final model it judged."""
    return f"({in_run('e.run_id')} OR e.policy IN (SELECT final_path FROM train_runs WHERE run_id = $run))"


def _method(con: "Con") -> str:
    """SQL for an evaluation's method ('dpo', 'ppo', 'best-of-n', ...) from the view policy_comparison (007)."""
    if "policy_comparison" not in tables(con):
        return "CAST(NULL AS VARCHAR)"
    return "(SELECT min(c.method) FROM policy_comparison c WHERE c.eval_id = e.eval_id)"  # one per eval_id


def _comparison(con: "Con", run_id: str | None) -> list[Table]:
    """Best-of-N beside the trained policies: the latest evaluation of each method against each base."""
    if "policy_comparison" not in tables(con):
        return []
    latest = rows(con, f"""
        SELECT c.method, c.base, c.policy, c.prompts, c.win_rate, c.win_rate_low, c.win_rate_high, c.lc_win_rate,
               e.lc_win_rate_low, e.lc_win_rate_high, c.judge_model, c.created_at
        FROM policy_comparison c JOIN winrate_evals e USING (eval_id) WHERE {_evals_in_run()}
        QUALIFY row_number() OVER (PARTITION BY c.method, c.base ORDER BY c.created_at DESC, c.eval_id) = 1
        ORDER BY c.base, c.win_rate DESC NULLS LAST, c.method""", run_id)
    if not latest:
        return []
    return [Table("policy-comparison", ["method", "base", "policy", "judge", "prompts", "win rate [95%]",
                                        "length-controlled", "evaluated (UTC)"],
                  [[c["method"], c["base"], c["policy"], c["judge_model"], c["prompts"], _rate(c, "win_rate"),
                    _rate(c, "lc_win_rate"), c["created_at"]] for c in latest],
                  "By method (view policy_comparison): the latest evaluation of each method against each base, "
                  "best first. Method: the kind of the training run that made the policy, best-of-n, or model.")]


def _rate(e: dict, name: str) -> str | None:
    """A rate with its interval as one cell: '0.620 [0.51, 0.73]'."""
    if e[name] is None:
        return None
    lo, hi = e[f"{name}_low"], e[f"{name}_high"]
    return f"{e[name]:.3f}" + ("" if lo is None or hi is None else f" [{lo:.2f}, {hi:.2f}]")


def _counts(e: dict) -> str | None:
    """Wins, ties and losses as one cell: '3 / 0 / 2'."""
    counts = (e["wins"], e["ties"], e["losses"])
    return None if None in counts else " / ".join(map(str, counts))


def _pair(lo: float | None, hi: float | None) -> tuple[float, float] | None:
    return None if lo is None or hi is None else (lo, hi)


def _policy_label(e: dict, limit: int = 28) -> str:
    """A policy as a tick label: its method first unless the name says it, long names cut in the middle."""
    text = e["policy"] if not e["method"] or e["policy"].startswith(e["method"]) else f"{e['method']}: {e['policy']}"
    return text if len(text) <= limit else f"{text[:limit // 2 - 1]}…{text[-(limit // 2):]}"


def _draw_win(fig, evals: list[dict], judged: list[dict]) -> None:
    left, right = fig.subplots(1, 2, width_ratios=[3, 2])
    for offset, (name, colour) in enumerate((("win_rate", COLOURS[0]), ("lc_win_rate", COLOURS[1]))):
        ys, xs, err = [], [], [[], []]
        for i, e in enumerate(evals):
            if e[name] is None:
                continue
            ys.append(i - 0.15 + 0.3 * offset)  # the win rate above its length-controlled twin
            xs.append(e[name])
            err[0].append(e[name] - (e[f"{name}_low"] if e[f"{name}_low"] is not None else e[name]))
            err[1].append((e[f"{name}_high"] if e[f"{name}_high"] is not None else e[name]) - e[name])
        left.errorbar(xs, ys, xerr=err, fmt="o", capsize=3, color=colour,
                      label="win rate" if offset == 0 else "length-controlled")
    left.set_yticks(range(len(evals)), [_policy_label(e) for e in evals])
    left.axvline(0.5, color="#999", linestyle="--", linewidth=0.8)
    left.set(xlim=(0, 1), ylim=(len(evals) - 0.4, -0.9), xlabel="win rate against the base")  # newest on top
    left.legend(loc="upper left", ncols=2, fontsize=7)
    right.scatter([j["diff"] for j in judged], [j["p_policy"] for j in judged], s=24 if len(judged) < 300 else 8,
                  alpha=0.6,
                  color=COLOURS[0], edgecolors="none")
    right.axhline(0.5, color="#999", linestyle="--", linewidth=0.8)
    right.set(ylim=(0, 1), xlabel="policy length - base length (chars)", ylabel="P(policy better)")


SECTIONS = [train_runs, curves, win_rate]
