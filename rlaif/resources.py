"""Where the shipped data lives: constitutions, SQL migrations and the data files (demo prompts, refusal patterns).

In a wheel these folders are packed under ``rlaif/_data/``; in a source checkout they sit at the repository
root. Looking in both places lets an editable install and a wheel behave the same.
"""

from __future__ import annotations

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder ``name`` (``constitutions``, ``storage``) shipped with the package."""
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"rlaif is missing its {name}/ folder; reinstall the package")


def package_file(*parts: str) -> Path:
    """Return a file that lives inside the ``rlaif`` package itself (e.g. ``data/prompts.jsonl``)."""
    return _PKG.joinpath(*parts)
