"""The ``rlaif`` command line: thin commands that parse options and call one library function each.

Each area's commands live in a module of their own and register themselves on ``app`` when imported; importing
this package imports every one of them (cheaply: they import nothing heavy at module level).
"""

from __future__ import annotations

from rlaif.cli import core  # noqa: F401  (registers its commands)
from rlaif.cli import generate  # noqa: F401
from rlaif.cli import generate_prefs  # noqa: F401
from rlaif.cli import judge  # noqa: F401
from rlaif.cli import judge_pairs  # noqa: F401
from rlaif.cli import prompts  # noqa: F401
from rlaif.cli import report  # noqa: F401
from rlaif.cli import rl  # noqa: F401
from rlaif.cli import train  # noqa: F401
from rlaif.cli import runs, schedule, shards  # noqa: F401
from rlaif.cli._app import app, main

__all__ = ["app", "main"]
