"""The ``rlaif`` command line: thin commands that parse options and call one library function each.

Each area's commands live in a module of their own and register themselves on ``app`` when imported; importing
this package imports every one of them (cheaply: they import nothing heavy at module level).
"""

from __future__ import annotations

from rlaif.cli import (  # noqa: F401
    core,  # each module registers its commands on import
    generate,
    generate_prefs,
    judge,
    judge_pairs,
    prompts,
    report,
    rl,
    runs,
    schedule,
    shards,
    train,
)
from rlaif.cli._app import app, main

__all__ = ["app", "main"]
