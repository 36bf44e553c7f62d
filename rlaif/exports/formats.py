"""Dataset exports: which query makes each dataset in each format, the filters, and the files they are written to.

The queries are ``storage/export_<dataset>[_trl].sql``; this module binds the filters to their parameters, runs
the query read-only and writes the result whole or not at all (a temporary name, renamed when complete).

Where the result goes is chosen by the ``out`` path: ``.parquet`` and ``.jsonl`` are files (DuckDB's COPY), any
other path (no suffix, or an existing folder) is a ``datasets.Dataset.save_to_disk`` folder.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from rlaif.errors import ConfigError, StoreError
from rlaif.resources import data_dir

Dataset = Literal["sft", "prefs", "kto", "rm"]
Format = Literal["trl", "raw"]
Kind = Literal["parquet", "jsonl", "disk"]
DATASETS: tuple[str, ...] = ("sft", "prefs", "kto", "rm")
FORMATS: tuple[str, ...] = ("trl", "raw")
SPLITS = ("train", "eval")
# (dataset, format) -> the query in storage/; the reward model's raw rows are the preference rows.
QUERIES: Mapping[tuple[str, str], str] = {
    ("sft", "trl"): "export_sft_trl.sql", ("sft", "raw"): "export_sft.sql",
    ("prefs", "trl"): "export_prefs_trl.sql", ("prefs", "raw"): "export_prefs.sql",
    ("kto", "trl"): "export_kto_trl.sql", ("kto", "raw"): "export_kto.sql",
    ("rm", "trl"): "export_rm_trl.sql", ("rm", "raw"): "export_prefs.sql",
}
# The view each dataset is read from (for messages and the dataset card).
VIEWS: Mapping[str, str] = {"sft": "sft_dataset", "prefs": "preference_dataset", "kto": "preference_dataset",
                            "rm": "preference_dataset"}
_FILE_KINDS: Mapping[str, Kind] = {".parquet": "parquet", ".jsonl": "jsonl"}
_PARAM_RE = re.compile(r"\$([a-z_]+)")


@dataclass(frozen=True)
class Filters:
    """Which rows an export keeps: one run's, one split's, pairs whose two orders agreed, pairs judged with at least
    ``min_confidence`` = |2 p_chosen - 1|. The last two are about judged pairs, so SFT refuses them."""

    run: str | None = None
    split: str | None = None
    consistent_only: bool = False
    min_confidence: float | None = None

    def check(self, dataset: str) -> None:
        if self.split is not None and self.split not in SPLITS:
            raise ConfigError(f"split: expected train or eval, got {self.split!r}")
        if self.min_confidence is not None and not 0.0 <= self.min_confidence <= 1.0:
            raise ConfigError("min_margin: expected a number from 0 to 1 (|2 p_chosen - 1|), "
                              f"got {self.min_confidence}")
        if dataset == "sft" and (self.consistent_only or self.min_confidence is not None):
            raise ConfigError("--consistent-only and --min-margin filter judged pairs: they apply to prefs, kto "
                              "and rm, not sft")


@dataclass(frozen=True)
class Export:
    """One export written: where, in which kind of file, and how many rows."""

    dataset: str
    format: str
    path: Path
    kind: Kind
    rows: int

    @property
    def folder(self) -> Path:
        """The folder that holds the export and its card (README.md)."""
        return self.path if self.kind == "disk" else self.path.parent

    @property
    def data_files(self) -> list[str]:
        """The export's data files, relative to ``folder``, as the dataset card's configs name them."""
        return ["data-*.arrow"] if self.kind == "disk" else [self.path.name]


def output_kind(out: Path) -> Kind:
    """``.parquet`` / ``.jsonl`` files; anything else is a ``save_to_disk`` folder (a suffix that looks like a file
    type we do not write is refused, so ``x.csv`` does not silently become a folder)."""
    suffix = out.suffix.lower()
    if suffix in _FILE_KINDS:
        return _FILE_KINDS[suffix]
    if suffix and not out.is_dir() and suffix[1:].isalpha() and len(suffix) <= 8:
        raise ConfigError(f"{out}: unknown file type {out.suffix!r}; expected one of: .parquet, .jsonl, or a folder "
                          "(no suffix) for datasets.Dataset.save_to_disk")
    return "disk"


def export_query(dataset: str, fmt: str) -> str:
    """The text of the export query (storage/export_*.sql), without its trailing semicolon."""
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r}; expected one of: {', '.join(DATASETS)}")
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of: {', '.join(FORMATS)}")
    return (data_dir("storage") / QUERIES[dataset, fmt]).read_text(encoding="utf-8").strip().rstrip(";")


def validate(dataset: str, fmt: str, out: Path, filters: Filters) -> tuple[str, Kind]:
    """Check an export's arguments, writing nothing; returns its query and the kind of output."""
    query = export_query(dataset, fmt)
    filters.check(dataset)
    return query, output_kind(out)


def bind(query: str, filters: Filters) -> dict[str, Any]:
    """The filter values for the parameters ``query`` names (DuckDB refuses parameters a query does not use)."""
    values = asdict(filters)
    return {name: values[name] for name in dict.fromkeys(_PARAM_RE.findall(query))}


def write_export(db: str | Path, dataset: str, fmt: str, out: str | Path, filters: Filters = Filters()) -> Export:
    """Run the export query of ``dataset`` in ``fmt`` over the database and write it to ``out`` (see the module
    docstring for the kinds). The previous export at ``out`` is replaced only once the new one is complete."""
    import duckdb

    from rlaif.store import Store, error_line

    out = Path(out)
    query, kind = validate(dataset, fmt, out, filters)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with Store(db).connect(read_only=True) as con:
            if kind == "disk":
                rows = _save_to_disk(con, query, bind(query, filters), tmp)
            else:
                target = str(tmp).replace("'", "''")
                copy = f"COPY (\n{query}\n) TO '{target}' (FORMAT {'parquet' if kind == 'parquet' else 'json'})"
                (rows,) = con.execute(copy, bind(query, filters)).fetchone()
        _replace(tmp, out)
    except duckdb.Error as exc:
        raise StoreError(f"cannot export {dataset} to {out}: {error_line(exc)}") from None
    finally:
        _remove(tmp)
    return Export(dataset, fmt, out, kind, int(rows))


def _save_to_disk(con: Any, query: str, params: dict[str, Any], folder: Path) -> int:
    """The query's rows as a ``save_to_disk`` folder: Arrow straight from DuckDB, so column types carry over."""
    try:
        import datasets
    except ImportError:
        raise ConfigError("a save_to_disk folder needs the datasets package (pip install datasets); or write a "
                          ".parquet or .jsonl file") from None

    table = con.sql(query, params=params).to_arrow_table()
    shown = not datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # a bar per shard is noise beside the one line the command prints
    try:
        # One shard at least: without it an empty dataset is saved with no data file, and load_from_disk fails.
        datasets.Dataset(table).save_to_disk(str(folder), num_shards=max(1, _shards(table.nbytes)))
    finally:
        if shown:
            datasets.enable_progress_bars()
    return table.num_rows


def _shards(nbytes: int, shard_bytes: int = 500 << 20) -> int:
    """As many shards as datasets' own default size (500 MB) asks for."""
    return -(-nbytes // shard_bytes)


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished export into place; an older export folder at ``out`` is swapped out, then removed."""
    if not tmp.is_dir():
        os.replace(tmp, out)
        return
    if out.exists() and not _is_export_folder(out):
        raise ConfigError(f"{out}: exists and is not a dataset folder that rlaif wrote; choose another --out")
    old = out.with_name(f".{out.name}.{os.getpid()}.old")
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    _remove(old)


def _is_export_folder(path: Path) -> bool:
    return path.is_dir() and (not any(path.iterdir()) or (path / "dataset_info.json").is_file())


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
