"""``rlaif schedule``: the project's deployments on a Prefect server, with a work pool and a worker."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlaif.cli._app import app, echo, overrides, settings
from rlaif.errors import UserError


@app.command()
def schedule(
    pool: str = typer.Option("rlaif-local", help="Work pool to deploy to (a process pool is created if missing)."),
    port: int = typer.Option(4200, help="Port of the local Prefect server started when PREFECT_API_URL is unset."),
    prompts: Optional[str] = typer.Option(None, help="Nightly prompt source: a file, folder or 'sql:...' "
                                                     "(default: the built-in set)."),
    limit: Optional[int] = typer.Option(None, min=1, help="Prompts per nightly run (default: all)."),
    worker: bool = typer.Option(True, help="Run a worker here (--no-worker when workers run elsewhere)."),
) -> None:
    """Deploy the nightly generation and weekly train-and-evaluate runs with their cron schedules, start a
    worker, and print the Prefect UI address. Uses PREFECT_API_URL, or starts a server on 127.0.0.1."""
    from rlaif import scheduling
    from rlaif.flows.deployments import NIGHTLY, WEEKLY, nightly_options, weekly_parameters

    effective = settings()
    scheduling.parse_port(port)
    given = {k: (str(v) if isinstance(v, Path) else v) for k, v in overrides().items() if v is not None}
    if prompts and not prompts.startswith("sql:"):  # the worker may run elsewhere: an absolute path
        if not Path(prompts).exists():
            raise UserError(f"--prompts {prompts}: no such file or folder")
        prompts = str(Path(prompts).resolve())
    extra = {NIGHTLY.name: {"options": nightly_options(prompts, limit)},
             WEEKLY.name: weekly_parameters(effective.db, prompts)}
    scheduled = scheduling.start({**given, "db": str(effective.db.resolve())}, pool=pool, port=port,
                                 worker=worker, extra=extra, log_dir=effective.cache_dir / "prefect", log=echo)
    echo(f"Prefect UI: {scheduled.ui_url}  (API {scheduled.api_url})")
    echo(f"deployments on work pool {pool!r}, writing to {effective.db.resolve()}:")
    for line in scheduling.describe(scheduled):
        echo(line)
    if not scheduled.children:
        echo(f"no worker here: start one with `prefect worker start --pool {pool}`")
        return
    running = "the worker" if worker else "the Prefect server"
    echo(f"{running} is running here; Ctrl-C stops what this command started")
    raise typer.Exit(scheduling.wait_children(scheduled, log=echo))
