"""``rlaif runs``: what every run did, from the database (read-only; works while runs are writing)."""

from __future__ import annotations

from typing import Optional

import typer

from rlaif.cli._app import app, echo, settings

runs_app = typer.Typer(help="List runs with their counts, tokens, duration and Prefect flow run; show one run.",
                       invoke_without_command=True)
app.add_typer(runs_app, name="runs")


def _json(value) -> str:
    import json

    return json.dumps(value, default=str, indent=2)


@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    limit: int = typer.Option(50, min=1, help="Show the latest N runs."),
    kind: Optional[str] = typer.Option(None, help="Only runs of this kind (demo, sft, prefs, train-dpo, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List runs, newest first: kind, status, rows per table, tokens, tokens/s, duration, Prefect flow run id."""
    if ctx.invoked_subcommand is not None:
        return
    from rlaif.run_history import format_runs, list_runs

    runs = list_runs(settings().db, limit=limit, kind=kind)
    echo(_json(runs) if as_json else format_runs(runs))


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="A run id, or a unique prefix of one."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Show one run: its options, summary (rows, tokens, calls per stage) and failures (errors, flags)."""
    from rlaif.run_history import format_detail, run_detail

    detail = run_detail(settings().db, run_id)
    echo(_json(detail) if as_json else format_detail(detail))
