"""The bounded window both generation pipelines schedule their chains in: one home for what they share.

``rlaif.pipeline`` (SFT chains) and ``rlaif.prefs.pipeline`` (preference jobs) each subclass ``ChainRun`` with
their own ``chain``; ``run_window`` runs it for every item of a source. The source is read in batches of
``window`` items (bad rows recorded and skipped, prompt rows written as they are read); each batch's stored
results are fetched in one query while earlier chains run, and an item enters only as a slot frees up. Rows
stream out through the writer, and new chains wait (off the event loop) when DuckDB falls behind. So memory
follows the window, not the number of prompts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from rlaif.recording import RecordingEngine, StoredResults
from rlaif.sources import BadRow

if TYPE_CHECKING:
    from rlaif.engines import Engines
    from rlaif.prompts import PromptRow
    from rlaif.stages import RunContext
    from rlaif.store import Store, Writer

MAX_ERRORS_KEPT = 20  # the summary keeps the first failures' messages; all are in the attempts table
# Rows buffered before new chains wait for DuckDB to catch up. A flush costs ~0.2 s however few rows it holds
# (open, commit, checkpoint on close), so the writer keeps up by taking bigger batches, up to this bound.
MAX_PENDING_ROWS = 16_384


class ChainRun:
    """The state one run's chains share: engines (recorded, over one ``StoredResults``), writer, summary.

    A pipeline subclasses it with ``chain(item)``; the other hooks say how an item names its prompt and when a
    prompt's stored results are loaded and dropped. ``summary`` needs the counters ``prompts``, ``bad_rows``,
    ``failed_prompts``, ``engine_calls``, ``output_tokens``, ``reused``, ``seconds`` and ``errors``.
    """

    def __init__(self, engines: "Engines", ctx: "RunContext", store: "Store", writer: "Writer", summary: Any):
        self.ctx, self.writer, self.summary = ctx, writer, summary
        self.stored = StoredResults(store)
        version = ctx.constitution_version
        self.policy = RecordingEngine(engines.policy, writer, run_id=ctx.run_id, constitution_version=version,
                                      stored=self.stored)
        self.feedback = self.policy if engines.shared else RecordingEngine(
            engines.feedback, writer, run_id=ctx.run_id, constitution_version=version, stored=self.stored)
        self.background: set[asyncio.Task] = set()  # tasks beside the chains (canary checks); awaited at the end

    @property
    def recorders(self) -> list[RecordingEngine]:
        return [self.policy] if self.policy is self.feedback else [self.policy, self.feedback]

    def write(self, table: str, rows: Iterable[dict]) -> None:
        for row in rows:
            self.writer.add(table, row)

    def failed(self, prompt: "PromptRow", where: str, error: str | None) -> None:
        self.summary.failed_prompts += 1
        self.note(f"prompt {prompt.prompt_id[:12]} {where}: {error}")

    def note(self, error: str) -> None:
        if len(self.summary.errors) < MAX_ERRORS_KEPT:
            self.summary.errors.append(error)

    def tally(self) -> None:
        """Copy the recorders' counters into the summary."""
        s = self.summary
        s.engine_calls = sum(r.engine_calls for r in self.recorders)
        s.output_tokens = sum(r.tokens_out for r in self.recorders)
        s.reused = sum(r.replayed for r in self.recorders)

    # -- what a pipeline fills in ----------------------------------------------------------------------------

    async def chain(self, item: Any) -> None:
        raise NotImplementedError

    def prompt_of(self, item: Any) -> "PromptRow":
        """The prompt row an item of the source runs on (the item itself, for SFT chains)."""
        return item

    async def begin(self) -> None:
        """Called once before the first batch enters."""

    def hold(self, prompt_id: str) -> bool:
        """Count an item in flight for this prompt; True when its stored results need loading."""
        return True

    def let_go(self, prompt_id: str) -> None:
        """An item of this prompt has ended: drop the prompt's stored results."""
        self.stored.release(prompt_id)


def _batches(source: Iterable[Any], size: int, limit: int | None, run: ChainRun) -> Iterator[list[Any]]:
    """Items of ``source`` in lists of ``size``, stopping after ``limit``; bad rows and prompt rows are written as
    they are read."""
    batch: list[Any] = []
    taken = 0
    for item in source:
        if isinstance(item, BadRow):  # recorded with its reason and skipped (--skip-bad-rows)
            run.summary.bad_rows += 1
            run.write("bad_rows", [item.as_row(run.ctx.run_id)])
            continue
        if limit is not None and taken >= limit:
            break
        taken += 1
        run.write("prompts", [run.prompt_of(item).as_row()])
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def run_window(run: ChainRun, source: Iterable[Any], *, limit: int | None, window: int,
                     on_prompt_done: Callable[[Any], None] | None) -> Any:
    """``run.chain`` for every item of ``source``, ``window`` in flight at once; returns ``run.summary``.

    ``on_prompt_done(summary)`` is called as each chain ends (progress bars read its counters).
    """
    gate = asyncio.Semaphore(window)
    running: set[asyncio.Task] = set()
    started = time.perf_counter()

    async def one(item: Any) -> None:
        prompt_id = run.prompt_of(item).prompt_id
        try:
            await run.chain(item)
        except Exception as exc:  # a bug in one chain must not sink the run; it is counted and reported
            run.failed(run.prompt_of(item), "chain", f"{type(exc).__name__}: {exc}")
        finally:
            run.let_go(prompt_id)
            run.tally()
            if on_prompt_done:
                on_prompt_done(run.summary)

    def done(task: asyncio.Task) -> None:
        running.discard(task)
        gate.release()

    await run.begin()
    for batch in _batches(source, window, limit, run):
        ids = [pid for pid in (run.prompt_of(item).prompt_id for item in batch) if run.hold(pid)]
        await asyncio.to_thread(run.stored.load, ids)
        for item in batch:
            await gate.acquire()
            if run.writer.pending > MAX_PENDING_ROWS:
                # Wait for DuckDB off the loop (in-flight chains go on); raises if the rows cannot be written.
                await asyncio.to_thread(run.writer.flush)
            run.summary.prompts += 1
            task = asyncio.create_task(one(item))
            running.add(task)
            task.add_done_callback(done)
    while running or run.background:
        await asyncio.gather(*running, *run.background)
    run.writer.flush()
    run.summary.seconds = time.perf_counter() - started
    run.tally()
    return run.summary
