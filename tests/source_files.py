"""Prompt sources written to real files for the source tests (tests/test_sources*.py): the same rows as JSONL, CSV,
TSV, Parquet, text, a ``datasets`` folder or a DuckDB table read with ``sql:``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rlaif.store import Store, utcnow

ROWS = [
    {"prompt": "How do I bake bread?", "category": "helpful"},
    {"prompt": "Insult my neighbour.", "category": "red-team"},
    {"prompt": "Name three rivers.", "category": "helpful"},
]
TEXTS = [r["prompt"] for r in ROWS]
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Tell me a joke."}]
# the start of the one-line reason for a prompt that is neither text nor turns
TURNS = "expected a string or a list of {role, content} turns, got"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_delimited(path: Path, rows: list[dict], delimiter: str) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_parquet(path: Path, rows: list[dict], **kw) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path, **kw)
    return path


def write_dataset(path: Path, rows: list[dict]) -> Path:
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(path), num_shards=min(3, len(rows)))  # Arrow files in order
    return path


def write_db(path: Path, query_rows: list[dict]) -> Path:
    store = Store(path)
    store.migrate()
    store.insert("prompts", [{"prompt_id": f"p{i}", "text": r["prompt"], "messages": r["messages"],
                              "source": "test", "split": "train", "created_at": utcnow()}
                             for i, r in enumerate(query_rows)])
    return path


def make_source(kind: str, tmp: Path, rows: list[dict]) -> tuple[str, dict]:
    """A source of ``kind`` holding ``rows``: (spec, extra read_prompts arguments)."""
    if kind == "jsonl":
        return str(write_jsonl(tmp / "p.jsonl", rows)), {}
    if kind == "csv":
        return str(write_delimited(tmp / "p.csv", rows, ",")), {}
    if kind == "tsv":
        return str(write_delimited(tmp / "p.tsv", rows, "\t")), {}
    if kind == "parquet":
        return str(write_parquet(tmp / "p.parquet", rows)), {}
    if kind == "txt":
        (tmp / "p.txt").write_text("\n".join(r["prompt"] for r in rows) + "\n", encoding="utf-8")
        return str(tmp / "p.txt"), {}
    if kind == "dataset":
        return str(write_dataset(tmp / "ds", rows)), {}
    assert kind == "sql"
    db = write_db(tmp / "db.duckdb", [{"prompt": r["prompt"], "messages": [{"role": "user", "content": r["prompt"]}]}
                                      for r in rows])
    return "sql:SELECT text AS prompt FROM prompts ORDER BY prompt_id", {"db": db}


KINDS = ["jsonl", "csv", "tsv", "parquet", "txt", "dataset", "sql"]
