"""``rlaif shards``: bring the databases of sharded runs (one per machine, ``--shard i/n``) together."""

from __future__ import annotations

from pathlib import Path

import typer

from rlaif.cli._app import app, echo

shards_app = typer.Typer(help="Merge the databases that shard workers (--shard i/n) wrote into one.",
                         no_args_is_help=True)
app.add_typer(shards_app, name="shards")


@shards_app.command("merge")
def shards_merge(
    shards: list[Path] = typer.Argument(..., help="Shard databases (DuckDB files) to merge."),
    into: Path = typer.Option(..., "--into", help="The database to merge into (created and migrated if new)."),
) -> None:
    """Copy every row of each shard into --into; row keys are content hashes, so merging twice adds nothing."""
    from rlaif.shards import merge_shards

    merged = merge_shards(shards, into)
    for shard, counts in merged.items():
        added = ", ".join(f"{table} +{n}" for table, n in counts.items() if n) or "nothing new"
        echo(f"{shard}: {added}")
    echo(f"merged {len(merged)} shard(s) into {into}")
