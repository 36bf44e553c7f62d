"""``rlaif generate prefs``: preference pairs from the policy's samples (or an SL-CAI run), judged by the feedback
model. Every option's help and validation come from ``rlaif.options.PrefsOptions``; ``rlaif judge pairs``
(``cli/judge_pairs.py``) runs the same code on a pair file.
"""

from __future__ import annotations

from typing import Optional

import typer

from rlaif.cli._app import Prefect, Progress, echo
from rlaif.cli.generate import failures_sql, generate_app, run_generation
from rlaif.options import PrefsOptions, option_help


def _help(name: str) -> str:
    return option_help(name, PrefsOptions)


@generate_app.command("prefs")
def generate_prefs(
    prompts: Optional[str] = typer.Option(None, help=_help("prompts")),
    prompt_column: Optional[str] = typer.Option(None, help=_help("prompt_column")),
    skip_bad_rows: bool = typer.Option(False, "--skip-bad-rows", help=_help("skip_bad_rows")),
    from_run: Optional[str] = typer.Option(None, help=_help("from_run")),
    samples: Optional[int] = typer.Option(None, help=_help("samples")),
    max_pairs: Optional[int] = typer.Option(None, help=_help("max_pairs")),
    principles: Optional[int] = typer.Option(None, help=_help("principles")),
    judge_mode: Optional[str] = typer.Option(None, help=_help("judge_mode")),
    constitution: Optional[str] = typer.Option(None, help=_help("constitution")),
    limit: Optional[int] = typer.Option(None, help=_help("limit")),
    seed: Optional[int] = typer.Option(None, help=_help("seed")),
    max_tokens: Optional[int] = typer.Option(None, help=_help("max_tokens")),
    temperature: Optional[float] = typer.Option(None, help=_help("temperature")),
    top_p: Optional[float] = typer.Option(None, help=_help("top_p")),
    prefect: Prefect = True,
    progress: Progress = True,
) -> None:
    """Sample K answers per prompt from the policy, pair them and judge each pair (AI feedback, RL-CAI data).

    With --from-run, judge each original answer of an SL-CAI run against its final revision instead. A rerun with
    the same configuration resumes the earlier run; with another it starts a new run and says why.
    """
    options = PrefsOptions.parse(
        prompts=prompts, prompt_column=prompt_column, skip_bad_rows=skip_bad_rows or None, from_run=from_run,
        samples=samples, max_pairs=max_pairs, principles=principles, judge_mode=judge_mode,
        constitution=constitution, limit=limit, seed=seed, max_tokens=max_tokens, temperature=temperature,
        top_p=top_p)
    finish(execute_prefs(options, kind="prefs", prefect=prefect, progress=progress))


def execute_prefs(options: PrefsOptions, *, kind: str, prefect: bool, progress: bool) -> dict:
    """Validate the preference run, then run it (``rlaif.cli.generate.run_generation``); returns the summary."""
    from rlaif.prefs.runner import prepare_prefs, run_prefs

    return run_generation(options, prepare_prefs, run_prefs, "rlaif.flows.rl_cai:rl_cai_flow", kind=kind,
                          prefect=prefect, progress=progress)


def summary_text(s: dict) -> str:
    """The closing summary: pairs judged, flags hit (pair flags too), canaries, tokens, failures and retries."""
    flags = ", ".join(f"{name} {n}" for name, n in sorted(s["flags"].items())) or "none"
    canary_failed = f", {s['canary_failures']} failed" if s["canary_failures"] else ""
    read = {"policy": f"{s['prompts']} prompts, {s['candidates']} candidates sampled ({s['empty_candidates']} empty)",
            "run": f"{s['prompts']} prompts of the SL-CAI run", "file": f"{s['prompts']} pairs read"}
    lines = [
        f"run {s['run_id']}{' (resumed)' if s['resumed'] else ''}: {read[s['candidates_from']]}, {s['judged']} of "
        f"{s['pairs']} pairs judged ({s['verdicts']} verdicts, {s['parse_failures']} unreadable), "
        f"{s['skipped_prompts']} skipped (too long), {s['bad_rows']} bad rows, {s['failed_prompts']} failed",
        f"flags hit: {flags}",
        f"canaries: {s['canaries']} checks, {s['canary_correct']} of {s['canary_verdicts']} verdicts correct"
        f"{canary_failed}",
        f"tokens: {s['output_tokens']} in {s['seconds']:.1f} s ({s['tokens_per_s']:.1f} tok/s); "
        f"{s['engine_calls']} engine calls, {s['reused']} results reused from the database",
        *s.get("warnings", ()),
    ]
    if s["failed_prompts"] or s["canary_failures"]:
        first = s["errors"][0] if s["errors"] else "unknown"
        lines += [
            f"failures: {s['failed_prompts']} prompts and {s['canary_failures']} canary checks failed (first: "
            f"{first}); run the same command again to retry just those, or see them with:",
            failures_sql(s["run_id"]),
        ]
    return "\n".join(lines)


def finish(summary: dict) -> None:
    """Print the summary; exit non-zero when something failed, after it said how to retry."""
    from rlaif.errors import EngineError

    echo(summary_text(summary))
    if summary["failed_prompts"] or summary["canary_failures"]:
        raise EngineError(f"{summary['failed_prompts']} of {summary['prompts']} prompts and "
                          f"{summary['canary_failures']} canary checks failed; run the same command again to "
                          "retry just those")
