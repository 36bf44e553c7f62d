"""The ``rlaif`` command line: thin commands that parse options and call one library function each.

Each area's commands live in a module of their own and register themselves on ``app`` when imported; importing
this package imports every one of them (cheaply: they import nothing heavy at module level).
"""

from __future__ import annotations

from rlaif.cli import (  # noqa: F401
    core,  # noqa: F401  (registers its commands)
    generate,  # noqa: F401
    generate_prefs,  # noqa: F401
    judge,  # noqa: F401
    judge_pairs,  # noqa: F401
    prompts,  # noqa: F401
    report,  # noqa: F401
    rl,  # noqa: F401
    runs,
    schedule,
    shards,
    train,  # noqa: F401
)
from rlaif.cli._app import app, main

__all__ = ["app", "main"]
