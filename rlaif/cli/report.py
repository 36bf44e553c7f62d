"""``rlaif report``: one self-contained HTML page of what is in the database."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlaif.cli._app import app, echo, settings


@app.command()
def report(
    out: Path = typer.Option(..., help="HTML file to write (its folder is made if missing)."),
    run: Optional[str] = typer.Option(None, help="Cover one run: an id from runs or train_runs (default: every run)."),
) -> None:
    """Write an HTML report of generation, preferences and training; print its path (opens offline)."""
    from rlaif.report import write_report

    echo(str(write_report(settings().db, out, run_id=run)))
