"""The ``rlaif`` application object, its global options and the entry point.

Commands live in one module per area (``rlaif/cli/core.py``, ...), each adding its commands to ``app``; the
package's ``__init__`` imports them all. Heavy libraries (torch, transformers, vLLM, Prefect) are imported inside
the commands that need them, so ``rlaif --help`` answers at once. User errors print one line and exit non-zero;
tracebacks are for bugs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from rlaif.environment import prepare_environment
from rlaif.errors import UserError

app = typer.Typer(help="Constitutional AI / RLAIF data generation into DuckDB.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
constitution_app = typer.Typer(help="Validate, show and describe constitution YAML files.", no_args_is_help=True)
models_app = typer.Typer(help="Prepare the models the engines load.", no_args_is_help=True)
app.add_typer(constitution_app, name="constitution")
app.add_typer(models_app, name="models")

# Options several commands take, declared once: ``prefect: Prefect = True, progress: Progress = True``.
Prefect = Annotated[bool, typer.Option(help="Run as a Prefect flow (--no-prefect runs the same code directly).")]
Progress = Annotated[bool, typer.Option(help="Show a progress bar.")]

_overrides: dict = {}


def settings():
    """The effective settings: the global options given on this command line over RLAIF_* and rlaif.toml."""
    from rlaif.config import load_settings

    return load_settings(**_overrides)


def overrides() -> dict:
    """The global options given on this command line (None for those left out)."""
    return dict(_overrides)


def echo(text: str) -> None:
    typer.echo(text)


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"rlaif {version('rlaif')}")
        except PackageNotFoundError:  # a checkout on PYTHONPATH that was never installed
            typer.echo("rlaif (not installed: a source checkout)")
        raise typer.Exit()


@app.callback()
def _global(
    db: Optional[Path] = typer.Option(None, help="DuckDB file (env RLAIF_DB; default ./rlaif.duckdb)."),
    engine: Optional[str] = typer.Option(None, help="transformers | openai | vllm | fake (env RLAIF_ENGINE)."),
    model: Optional[str] = typer.Option(None, help="Model name or local folder (env RLAIF_MODEL)."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible URL(s), comma-separated."),
    version: bool = typer.Option(False, "--version", help="Print rlaif's version and exit.", is_eager=True,
                                 callback=_show_version),
) -> None:
    """Options given here override RLAIF_* variables and rlaif.toml."""
    _overrides.update(db=db, engine=engine, model=model, base_url=base_url)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; a UserError becomes one line on stderr and its exit code."""
    prepare_environment()
    command = typer.main.get_command(app)
    try:
        # Without standalone mode click returns a command's exit code (typer.Exit(n)) instead of raising it.
        code = command.main(args=argv if argv is not None else sys.argv[1:], prog_name="rlaif",
                            standalone_mode=False)
    except UserError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 130
    except typer.TyperException as exc:  # usage errors: typer's click shows them with the usage line
        show = getattr(exc, "show", None)
        show() if show else typer.echo(f"error: {exc}", err=True)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    return code if isinstance(code, int) else 0
