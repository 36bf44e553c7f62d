"""``rlaif prompts``: look at a prompt source before generating from it."""

from __future__ import annotations

import typer

from rlaif.cli._app import app, echo, settings

prompts_app = typer.Typer(help="Look at prompt sources (files, save_to_disk folders, sql: queries) before a run.",
                          no_args_is_help=True)
app.add_typer(prompts_app, name="prompts")

_SHOWN_BAD_ROWS = 20  # the rest are counted; `rlaif generate sft --skip-bad-rows` records every one
_CELL_CHARS = 200


@prompts_app.command("inspect")
def inspect(
    source: str = typer.Argument(..., help="A .jsonl/.csv/.tsv/.parquet/.txt file, a save_to_disk folder, "
                                           "or 'sql:SELECT ...' over the project database."),
    prompt_column: str = typer.Option("prompt", help="Column holding the prompt (else a 'messages' column)."),
    helpful_column: str | None = typer.Option(
        None, help="Column whose true/1/yes/helpful values mark prompts whose answer is kept unrevised."),
) -> None:
    """Print a source's prompt count, columns and first three rows, without generating.

    Bad rows are printed as FILE:ROW: ... lines, then their total as an error (exit status 2).
    """
    import json

    from rlaif.errors import ConfigError
    from rlaif.sources import inspect_source

    db = settings().db if source.lstrip().lower().startswith("sql:") else None
    info = inspect_source(source, prompt_column=prompt_column, helpful_column=helpful_column, db=db)
    check = info.check
    echo(f"source:  {info.source}")
    if info.has_prompt_column:
        echo(f"prompts: {info.count} ({_count(info.rows, 'row')}; {_count(check.duplicates, 'duplicate')}, "
             f"{check.bad_total} bad, {check.helpful} helpful)")
    else:
        echo(f"prompts: none read ({_count(info.rows, 'row')}): no column {prompt_column!r} or 'messages'")
    echo(f"columns: {', '.join(info.columns) or '(none)'}")
    for record in info.sample:
        text = json.dumps(record.values, ensure_ascii=False, default=str)
        echo(f"row {record.row}: {text if len(text) <= _CELL_CHARS else text[:_CELL_CHARS - 3] + '...'}")
    if not info.has_prompt_column:
        echo(f"to read prompts from a column, pass --prompt-column {info.suggested[0]}" if info.suggested else
             "no column holds text or a list of {role, content} turns; pass --prompt-column NAME")
        if len(info.suggested) > 1:
            echo(f"other candidates: {', '.join(info.suggested[1:])}")
    if check.bad_total:
        shown = check.bad_rows[:_SHOWN_BAD_ROWS]
        for bad in shown:
            echo(bad.message)
        more = f" ({check.bad_total - len(shown)} not shown)" if check.bad_total > len(shown) else ""
        raise ConfigError(f"{_count(check.bad_total, 'bad row')}{more} in {info.source}: fix them, or generate "
                          "with --skip-bad-rows to record and skip them")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
