"""A rich progress bar for generation runs: prompts done and output tokens per second."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def prompt_progress(total: int, *, enabled: bool = True, label: str = "generating") -> Iterator[Callable[[int], None]]:
    """Yield ``advance(tokens_so_far)``, called once per finished prompt with the run's output tokens so far."""
    if not enabled:
        yield lambda tokens: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    started = time.perf_counter()
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("prompts"), TextColumn("{task.fields[rate]}"), TimeElapsedColumn())
    with Progress(*columns) as progress:
        task = progress.add_task(label, total=total, rate="")

        def advance(tokens_total: int) -> None:
            rate = tokens_total / max(time.perf_counter() - started, 1e-9)
            progress.update(task, advance=1, rate=f"{tokens_total} tokens, {rate:.0f} tok/s")

        yield advance
