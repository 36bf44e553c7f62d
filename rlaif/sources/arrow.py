"""Columnar sources: Parquet files (``ParquetFile.iter_batches``) and folders written by
``datasets.Dataset.save_to_disk`` (Arrow IPC stream files listed in its ``state.json``), read batch by batch.

Neither imports ``datasets``: a save_to_disk folder is plain Arrow files, which pyarrow memory-maps and reads one
record batch at a time. Only the requested columns are read when ``columns`` is given; batches are cut to
``BATCH_ROWS`` rows before they become Python dicts, so memory holds one small batch whatever the file's layout.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.errors import ConfigError
from rlaif.sources.base import Columns, Record

if TYPE_CHECKING:
    import pyarrow as pa

BATCH_ROWS = 1024


def batch_records(source: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch],
                  columns: Iterable[str] | None) -> Iterator[Columns | Record]:
    """Columns (the full schema), then one Record per row of ``batches``, numbered from 1."""
    yield Columns(tuple(schema.names))
    number = 0
    for batch in batches:
        for start in range(0, batch.num_rows, BATCH_ROWS):
            for values in batch.slice(start, BATCH_ROWS).to_pylist():
                number += 1
                yield Record(source, number, values)


def _projection(schema: pa.Schema, columns: Iterable[str] | None) -> list[str] | None:
    """The requested columns that exist (a missing one is reported by the caller, with the schema's names)."""
    return None if columns is None else [c for c in dict.fromkeys(columns) if c in schema.names]


def read_parquet(source: str, path: Path, columns: Iterable[str] | None = None) -> Iterator[Columns | Record]:
    """Rows of a Parquet file, read in record batches (memory holds about one row group's requested columns)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{source}: expected a Parquet file, got {str(exc).splitlines()[0]}") from None
    with file:
        schema = file.schema_arrow
        batches = file.iter_batches(batch_size=BATCH_ROWS, columns=_projection(schema, columns))
        yield from batch_records(source, schema, batches, columns)


def _arrow_files(source: str, folder: Path) -> list[Path]:
    """The data files of a save_to_disk folder, in order, from its state.json."""
    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
        raise ConfigError(f"{source}: expected one dataset, got a DatasetDict with splits {', '.join(splits)}; "
                          f"give one split's folder, e.g. {folder / (splits[0] if splits else 'train')}")
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        files = [folder / f["filename"] for f in state["_data_files"]]
    except FileNotFoundError:
        raise ConfigError(f"{source}: expected a folder written by datasets.Dataset.save_to_disk "
                          "(with a state.json), got a folder without one") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{source}/state.json: expected the datasets save_to_disk state, got {exc!r}") from None
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise ConfigError(f"{source}: data file {missing[0]} listed in state.json is missing")
    return files


def read_arrow_folder(source: str, folder: Path,
                      columns: Iterable[str] | None = None) -> Iterator[Columns | Record]:
    """Rows of a ``save_to_disk`` folder: its Arrow stream files in order, one record batch at a time."""
    import pyarrow as pa

    files = _arrow_files(source, folder)
    if not files:
        return

    def batches(schema: pa.Schema) -> Iterator[pa.RecordBatch]:
        keep = _projection(schema, columns)
        for path in files:
            with pa.memory_map(str(path)) as mapped, pa.ipc.open_stream(mapped) as reader:
                for batch in reader:
                    yield batch if keep is None else batch.select(keep)

    try:
        with pa.memory_map(str(files[0])) as mapped, pa.ipc.open_stream(mapped) as first:
            schema = first.schema
        yield from batch_records(source, schema, batches(schema), columns)
    except pa.ArrowInvalid as exc:
        raise ConfigError(f"{source}: expected Arrow files written by save_to_disk, got {exc}") from None
