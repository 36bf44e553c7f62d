"""Prompt and pair sources, streamed: JSON Lines, CSV/TSV, Parquet, plain text, save_to_disk folders, SQL.

``read_records`` gives any source's raw rows (the judge reads pair files with it); ``read_prompts`` validates
them into ``PromptRow``s with duplicates collapsed; ``check_prompts`` is that validation as a pass that keeps
nothing (a run's total, and its stop before any write); ``inspect_source`` is what ``rlaif prompts inspect``
prints. Nothing heavy is imported here: pyarrow and duckdb load inside the readers that need them.
"""

from __future__ import annotations

from rlaif.sources.base import BadRow, Record
from rlaif.sources.prompt_rows import (
    MAX_BAD_ROWS,
    SourceCheck,
    SourceInfo,
    check_prompts,
    inspect_source,
    is_helpful,
    read_prompts,
)
from rlaif.sources.records import EXPECTED, describe_spec, read_records

__all__ = [
    "EXPECTED", "MAX_BAD_ROWS", "BadRow", "Record", "SourceCheck", "SourceInfo", "check_prompts",
    "describe_spec", "inspect_source", "is_helpful", "read_prompts", "read_records",
]
