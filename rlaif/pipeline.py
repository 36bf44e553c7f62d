"""Schedule the supervised CAI chain over a stream of prompts, a bounded window in flight, rows out as they come.

Each prompt runs its own chain as one asyncio task: respond (policy) -> N critique/revision rounds (feedback) ->
optionally the judge on (original, final revision) in both orders. Many prompts are in flight at once, so the
engine sees a continuous stream, never a batch waiting on its slowest member, and no stage barrier leaves it idle.

Prompts stream in: the source is read in batches of ``window`` prompts, each batch's stored results are fetched
in one query (``StoredResults``) while earlier chains run, and a batch enters only as slots free up. Rows stream
out through the writer, which is throttled when DuckDB falls behind. So memory follows the window, not the
number of prompts.

The stages own their requests, seeds and rows; this module only decides what runs when and hands rows to the
writer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rlaif.recording import RecordingEngine, StoredResults
from rlaif.sources import BadRow
from rlaif.stages import RunContext, skipped_row
from rlaif.stages.compare_revision import judge_revision
from rlaif.stages.critique_revise import critique_revise, revision_rows
from rlaif.stages.respond import respond, response_row

if TYPE_CHECKING:
    from rlaif.engines import Engines
    from rlaif.prompts import PromptRow
    from rlaif.quality import RowFlagger
    from rlaif.store import Store, Writer

MAX_ERRORS_KEPT = 20  # the summary keeps the first failures' messages; all are in the attempts table
MAX_PENDING_ROWS = 16_384


@dataclass
class RunSummary:
    """What a run did, printed at its end and returned by the flow."""

    run_id: str
    prompts: int = 0  # prompts that entered the run
    responses: int = 0  # non-empty first answers
    helpful: int = 0  # of which kept unrevised
    revisions: int = 0  # chains that got every round
    comparisons: int = 0
    rows: int = 0  # SFT rows made (final revisions and helpful answers), before flags
    failed_prompts: int = 0  # an engine call failed for good; the next run retries it
    skipped_prompts: int = 0  # a request would not fit the context (table skipped_prompts)
    bad_rows: int = 0  # source rows recorded in bad_rows and skipped
    empty_outputs: int = 0  # the model returned nothing; kept as data (NULL) and flagged, not retried
    engine_calls: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    reused: int = 0  # results answered from the database instead of the engine
    resumed: bool = False
    flags: dict[str, int] = field(default_factory=dict)  # flag -> rows of this run it hit
    errors: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": round(self.tokens_per_s, 1)}


class _Run:
    """The state one run's chains share: engines (recorded), writer, flagger, counters."""

    def __init__(self, engines: "Engines", ctx: RunContext, store: "Store", writer: "Writer",
                 flagger: "RowFlagger", judge: bool):
        self.ctx, self.writer, self.flagger, self.judge = ctx, writer, flagger, judge
        self.stored = StoredResults(store)
        self.policy = RecordingEngine(engines.policy, writer, run_id=ctx.run_id,
                                      constitution_version=ctx.constitution_version, stored=self.stored)
        self.feedback = self.policy if engines.shared else RecordingEngine(
            engines.feedback, writer, run_id=ctx.run_id, constitution_version=ctx.constitution_version,
            stored=self.stored)
        self.summary = RunSummary(run_id=ctx.run_id)

    @property
    def recorders(self) -> list[RecordingEngine]:
        return [self.policy] if self.policy is self.feedback else [self.policy, self.feedback]

    def write(self, table: str, rows: Iterable[dict]) -> None:
        for row in rows:
            self.writer.add(table, row)

    def failed(self, prompt: "PromptRow", where: str, error: str | None) -> None:
        self.summary.failed_prompts += 1
        if len(self.summary.errors) < MAX_ERRORS_KEPT:
            self.summary.errors.append(f"prompt {prompt.prompt_id[:12]} {where}: {error}")

    async def chain(self, prompt: "PromptRow") -> None:
        """One prompt: respond, then (unless helpful) critique/revise, then the judge if asked.

        An engine failure ends the chain and is reported (its attempts are already recorded); nothing that
        depends on the failed call is written, so the next run redoes exactly that part. An empty output is
        data, not a failure: it is stored as NULL, flagged, and ends the chain the same way on every run.
        """
        ctx, s = self.ctx, self.summary
        response = await respond(ctx, prompt, self.policy)
        if response.overflow is not None:
            s.skipped_prompts += 1
            return self.write("skipped_prompts", [skipped_row(ctx, prompt.prompt_id, "respond", None,
                                                              response.overflow)])
        if response.error is not None:
            return self.failed(prompt, "respond", response.error)
        helpful = prompt.helpful
        self.write("responses", [response_row(ctx, response, helpful=helpful)])
        self.write("row_flags", self.flagger.response(response))
        original = response.text
        if original is None:
            s.empty_outputs += 1
            return
        s.responses += 1
        if helpful:
            s.helpful += 1
            s.rows += 1
            return
        await self._revise(prompt, response.chain_id, original, response.completion.key,
                           response.completion.model)

    async def _revise(self, prompt: "PromptRow", chain: str, original: str, response_key: str,
                      policy_model: str) -> None:
        ctx, s = self.ctx, self.summary
        revisions = await critique_revise(ctx, prompt, original, self.feedback)
        self.write("revisions", revision_rows(ctx, chain, prompt, original, response_key, revisions,
                                              policy_model=policy_model))
        self.write("row_flags", self.flagger.revisions(chain, revisions))
        if revisions.error is not None:
            return self.failed(prompt, revisions.failed_at or "revise", revisions.error)
        if revisions.overflow is not None:
            s.skipped_prompts += 1
            round_number = len(revisions.rounds) + 1
            return self.write("skipped_prompts", [skipped_row(ctx, prompt.prompt_id, revisions.overflow_stage or "",
                                                              round_number, revisions.overflow)])
        final = revisions.final
        if final is None:
            s.empty_outputs += 1
            return
        s.revisions += 1
        s.rows += 1
        if not self.judge or final == original:
            return  # identical texts carry no preference
        rows, error = await judge_revision(ctx, prompt, chain, original, final, self.feedback,
                                           policy_model=policy_model)
        if error is not None:
            return self.failed(prompt, "judge", error)
        self.write("comparisons", rows)
        s.comparisons += 1


def _batches(source: Iterable[Any], size: int, limit: int | None, run: _Run) -> Iterator[list["PromptRow"]]:
    """Prompts from ``source`` in lists of ``size``, stopping after ``limit``; bad rows and prompt rows are
    written as they are read."""
    batch: list["PromptRow"] = []
    taken = 0
    for item in source:
        if isinstance(item, BadRow):  # recorded with its reason and skipped (--skip-bad-rows)
            run.summary.bad_rows += 1
            run.write("bad_rows", [item.as_row(run.ctx.run_id)])
            continue
        if limit is not None and taken >= limit:
            break
        taken += 1
        run.write("prompts", [item.as_row()])
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


async def run_chains(
    source: Iterable[Any],
    engines: "Engines",
    ctx: RunContext,
    store: "Store",
    writer: "Writer",
    *,
    flagger: "RowFlagger",
    judge: bool = False,
    limit: int | None = None,
    window: int = 256,
    on_prompt_done: Callable[[RunSummary], None] | None = None,
) -> RunSummary:
    """Run the chain for every prompt of ``source`` (PromptRow or BadRow items), ``window`` in flight at once.

    ``on_prompt_done(summary)`` is called as each prompt's chain ends (progress bars read its counters).
    """
    run = _Run(engines, ctx, store, writer, flagger, judge)
    gate = asyncio.Semaphore(window)
    running: set[asyncio.Task] = set()
    started = time.perf_counter()
    # Rows buffered before new chains wait for DuckDB to catch up. A flush costs ~0.2 s however few rows it holds
    # (open, commit, checkpoint on close), so the writer keeps up by taking bigger batches, up to this bound.
    max_pending = MAX_PENDING_ROWS

    async def one(prompt: "PromptRow") -> None:
        try:
            await run.chain(prompt)
        except Exception as exc:  # a bug in one chain must not sink the run; it is counted and reported
            run.failed(prompt, "chain", f"{type(exc).__name__}: {exc}")
        finally:
            run.stored.release(prompt.prompt_id)
            _tally(run)
            if on_prompt_done:
                on_prompt_done(run.summary)

    def done(task: asyncio.Task) -> None:
        running.discard(task)
        gate.release()

    for batch in _batches(source, window, limit, run):
        await asyncio.to_thread(run.stored.load, [p.prompt_id for p in batch])
        for prompt in batch:
            await gate.acquire()
            if writer.pending > max_pending:
                # Wait for DuckDB off the loop (in-flight chains go on); raises if the rows cannot be written.
                await asyncio.to_thread(writer.flush)
            run.summary.prompts += 1
            task = asyncio.create_task(one(prompt))
            running.add(task)
            task.add_done_callback(done)
    if running:
        await asyncio.gather(*running)
    writer.flush()
    run.summary.seconds = time.perf_counter() - started
    _tally(run)
    return run.summary


def _tally(run: _Run) -> None:
    """Copy the recorders' counters into the summary."""
    s = run.summary
    s.engine_calls = sum(r.engine_calls for r in run.recorders)
    s.output_tokens = sum(r.tokens_out for r in run.recorders)
    s.reused = sum(r.replayed for r in run.recorders)
