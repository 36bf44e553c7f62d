"""``rlaif generate sft`` (supervised CAI on the user's prompts) and ``rlaif stats`` (data-quality flags).

``generate`` is a sub-app so that later kinds (``generate prefs``) join it. Every run option's help and
validation come from ``rlaif.options.RunOptions``: the options here only carry what the user typed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

import typer

from rlaif.cli._app import Prefect, Progress, app, echo, settings
from rlaif.options import option_help

if TYPE_CHECKING:
    from rlaif.options import RunOptions

generate_app = typer.Typer(help="Generate training data from your own prompts (sft: critique and revise).",
                           no_args_is_help=True)
app.add_typer(generate_app, name="generate")


@generate_app.command("sft")
def generate_sft(
    prompts: str = typer.Option(..., help=option_help("prompts")),
    prompt_column: Optional[str] = typer.Option(None, help=option_help("prompt_column")),
    helpful_column: Optional[str] = typer.Option(None, help=option_help("helpful_column")),
    no_revise: bool = typer.Option(False, "--no-revise", help=option_help("no_revise")),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help=option_help("skip_bad_rows")),
    constitution: Optional[str] = typer.Option(None, help=option_help("constitution")),
    rounds: Optional[int] = typer.Option(None, help=option_help("rounds")),
    limit: Optional[int] = typer.Option(None, help=option_help("limit")),
    shard: Optional[str] = typer.Option(None, help=option_help("shard")),
    context: Optional[str] = typer.Option(None, help=option_help("context")),
    seed: Optional[int] = typer.Option(None, help=option_help("seed")),
    max_tokens: Optional[int] = typer.Option(None, help=option_help("max_tokens")),
    temperature: Optional[float] = typer.Option(None, help=option_help("temperature")),
    top_p: Optional[float] = typer.Option(None, help=option_help("top_p")),
    judge: bool = typer.Option(False, "--judge", help=option_help("judge")),
    prefect: Prefect = True,
    progress: Progress = True,
) -> None:
    """Critique and revise the policy's answers to your prompts (Constitutional AI, supervised phase).

    A rerun with the same configuration resumes the earlier run; with another it starts a new run and says why.
    """
    from rlaif.options import RunOptions

    options = RunOptions.parse(
        prompts=prompts, prompt_column=prompt_column, helpful_column=helpful_column, no_revise=no_revise,
        skip_bad_rows=skip_bad_rows, constitution=constitution, rounds=rounds, limit=limit, shard=shard,
        context=context, seed=seed, max_tokens=max_tokens, temperature=temperature, top_p=top_p, judge=judge)
    summary = execute(options, kind="sft", prefect=prefect, progress=progress)
    echo(summary_text(summary))
    fail_if_partial(summary)


def execute(options: "RunOptions", *, kind: str, prefect: bool, progress: bool) -> dict:
    """Validate the SFT run, then run it (``run_generation``); returns the summary."""
    from rlaif.runner import prepare, run_sft

    return run_generation(options, prepare, run_sft, "rlaif.flows.sl_cai:sl_cai_flow", kind=kind, prefect=prefect,
                          progress=progress)


def run_generation(options: Any, prepare: Callable, run: Callable, flow: str, *, kind: str, prefect: bool,
                   progress: bool) -> dict:
    """Validate the run here (one clear line on a mistake, before any write), then run it in the Prefect flow
    ``flow`` ("module:function", imported only then) or directly; returns the summary."""
    effective = settings()
    plan = prepare(effective, options)
    if prefect:
        module, _, name = flow.partition(":")
        run_flow = getattr(importlib.import_module(module), name)
        return run_flow(options=options, settings_overrides=effective.model_dump(mode="json"), kind=kind,
                        show_progress=progress)
    return run(effective, plan, kind=kind, show_progress=progress, log=echo).as_dict()


def failures_sql(run_id: str) -> str:
    """The command that lists a run's failed engine calls by stage and error (closing summaries print it)."""
    return (f"  rlaif sql \"SELECT stage, error, count(*) AS n FROM attempts WHERE run_id = '{run_id}' "
            "AND status = 'failed' GROUP BY ALL\"")


def summary_text(s: dict) -> str:
    """The closing summary: rows, flags hit, tokens, tokens/s, failures and how to retry them."""
    flags = ", ".join(f"{name} {n}" for name, n in sorted(s["flags"].items())) or "none"
    lines = [
        f"run {s['run_id']}{' (resumed)' if s['resumed'] else ''}: {s['prompts']} prompts "
        f"({s['helpful']} kept unrevised), {s['revisions']} revised, {s['comparisons']} judged, "
        f"{s['skipped_prompts']} skipped (too long), {s['bad_rows']} bad rows, {s['empty_outputs']} empty, "
        f"{s['failed_prompts']} failed",
        f"rows: {s['rows']} SFT rows made; flags hit: {flags}",
        f"tokens: {s['output_tokens']} in {s['seconds']:.1f} s ({s['tokens_per_s']:.1f} tok/s); "
        f"{s['engine_calls']} engine calls, {s['reused']} results reused from the database",
        *s.get("warnings", ()),
    ]
    lines += limit_advice(s)
    if s["failed_prompts"]:
        lines += [
            f"failures: {s['failed_prompts']} prompts failed (first: {s['errors'][0]}); run the same command "
            "again to retry just those, or see them with:",
            failures_sql(s["run_id"]),
        ]
    return "\n".join(lines)


def limit_advice(s: dict) -> list[str]:
    """A line per limit the run hit, saying how to raise it (truncated answers leave sft_dataset)."""
    out = []
    # flag counts are keyed "<target> <flag>" ("response truncated", "revision truncated")
    cut = sum(n for name, n in s["flags"].items() if name.split()[-1] == "truncated")
    limit = s.get("max_tokens") or 0
    if cut:
        more = f" (e.g. --max-tokens {2 * limit})" if limit else ""
        out.append(f"limits: {cut} rows stopped at max_tokens{f' = {limit}' if limit else ''} (flag truncated, left "
                   f"out of sft_dataset); raise it with --max-tokens{more}")
    if s["skipped_prompts"]:
        out.append(f"limits: {s['skipped_prompts']} prompts outgrew the model's context; a lower --max-tokens, "
                   "--context fresh or fewer --rounds make room (see: rlaif sql \"SELECT * FROM skipped_prompts\")")
    return out


def fail_if_partial(summary: dict) -> None:
    """Exit non-zero when prompts failed, after the summary said how to retry them."""
    from rlaif.errors import EngineError

    if summary["failed_prompts"]:
        raise EngineError(f"{summary['failed_prompts']} of {summary['prompts']} prompts failed; "
                          "run the same command again to retry just those")


@app.command()
def stats(run: Optional[str] = typer.Option(None, "--run", help="Only this run's flags (a runs.run_id).")) -> None:
    """Print how many rows each data-quality flag hit, per run and in total (every flag in row_flags)."""
    from rlaif.quality import flag_counts
    from rlaif.store import Store

    rows = flag_counts(Store(settings().db), run, read_only=True)
    if not rows:
        echo(f"no flags{f' for run {run}' if run else ''} in {settings().db}")
        return
    totals: dict[tuple[str, str], int] = {}
    echo(f"{'run':28} {'target':10} {'flag':16} {'rows':>8}")
    for r in rows:
        echo(f"{r['run_id']:28} {r['target']:10} {r['flag']:16} {r['rows']:>8}")
        totals[(r["target"], r["flag"])] = totals.get((r["target"], r["flag"]), 0) + r["rows"]
    for (target, flag), n in sorted(totals.items()):
        echo(f"{'total':28} {target:10} {flag:16} {n:>8}")
