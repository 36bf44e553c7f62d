"""A rich progress bar for generation runs: prompts done of the source's count, SFT rows, tokens/s and ETA."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

_REDRAW_S = 0.1  # updating rich's task on every prompt of a fast run costs more than the run's own work


@contextmanager
def prompt_progress(total: int, *, enabled: bool = True, label: str = "generating") -> Iterator[Callable[[Any], None]]:
    """Yield ``advance(summary)``, called once per finished prompt with the run's live ``RunSummary``."""
    if not enabled:
        yield lambda summary: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    started = time.perf_counter()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(bar_width=16), MofNCompleteColumn(),
               TextColumn("prompts {task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
               TimeRemainingColumn())
    last = [0.0, 0]
    with Progress(*columns) as progress:
        task = progress.add_task(label, total=total or None, rate="")

        def advance(summary: Any) -> None:
            last[1] += 1
            now = time.perf_counter()
            if now - last[0] < _REDRAW_S and last[1] < total:
                return
            rate = summary.output_tokens / max(now - started, 1e-9)
            progress.update(task, completed=last[1], rate=f"{summary.rows} rows {rate:.0f} tok/s")
            last[0] = now

        yield advance
