"""Run a generation job end to end: validate, open the store and engines, run the pipeline, flag, record.

``prepare`` checks everything the user controls (options, constitution, prompt source, refusal patterns) and
writes nothing, so a mistake stops the run before its first row. ``run_sft`` then opens the engines and the
database, resumes or starts the run (``rlaif.runs``), streams the prompts through ``rlaif.pipeline``, adds the
run-level flags and records how the run ended. Flows (``flows/``) call the two inside Prefect tasks; tests and
``--no-prefect`` call ``generate_sft``, which does both.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from rlaif.pipeline import RunSummary, run_chains
from rlaif.progress import prompt_progress
from rlaif.shards import parse_shard, shard_filter

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.constitution import Constitution
    from rlaif.engines import Engines
    from rlaif.options import RunOptions
    from rlaif.store import Store, Writer

S = TypeVar("S")  # a pipeline's summary
WRITER_MEMORY_MB = 64  # DuckDB memory during a flush; doubles on demand when a database's indexes need more


@dataclass(frozen=True)
class Plan:
    """A validated run, nothing written yet. ``options.seed`` is filled in; ``total`` sizes the progress bar."""

    options: "RunOptions"
    constitution: "Constitution"
    source: str  # the source's identity (rlaif.runs.source_identity)
    total: int
    bad_rows: int
    refusal_patterns: re.Pattern[str]


def _source_args(options: "RunOptions") -> dict:
    return {"prompt_column": options.prompt_column, "helpful_column": options.helpful_column,
            "all_helpful": options.no_revise, "skip_bad_rows": options.skip_bad_rows}


def prepare(settings: "Settings", options: "RunOptions") -> Plan:
    """Check the constitution, the whole prompt source and the refusal patterns; raise one UserError line."""
    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.runs import source_identity
    from rlaif.stages.flags import load_refusal_patterns

    options = options.with_seed(settings.seed)
    constitution = load_constitution(resolve_constitution(options.constitution))
    patterns = load_refusal_patterns(settings.flags.refusal_patterns)
    from rlaif.sources import check_prompts

    check = check_prompts(options.prompts, db=settings.db, limit=options.limit, **_source_args(options))
    total = check.count
    if options.shard:  # the progress bar's total: the shard's expected share (a hash range is 1/n of the ids)
        total = -(-total // parse_shard(options.shard)[1])
    return Plan(options, constitution, source_identity(options.prompts), total, check.bad_total, patterns)


def open_store(settings: "Settings") -> "Store":
    """The project database, migrated to the current schema."""
    from rlaif.store import Store

    store = Store.from_settings(settings)  # the lock policy: lock_wait_s, on_locked
    store.migrate()
    return store


def run_sft(
    settings: "Settings",
    plan: Plan,
    *,
    kind: str = "sft",
    engines: "Engines | None" = None,
    show_progress: bool = True,
    prefect_flow_run_id: str | None = None,
    log: Callable[[str], None] = print,
) -> RunSummary:
    """Generate the SFT rows of a prepared run; returns its summary.

    The run row ends ``completed`` when every chain finished, ``partial`` when some engine calls failed for good
    (they are in the attempts table, and the next run retries just those), and ``failed`` if the run itself
    stopped; buffered rows are flushed first.
    """
    from rlaif.engines import open_engines
    from rlaif.quality import RowFlagger
    from rlaif.runs import start_run
    from rlaif.sources import read_prompts
    from rlaif.stages import RunContext

    engines = engines or open_engines(settings)
    store = open_store(settings)
    options = plan.options
    start = start_run(store, kind=kind, options=options, constitution=plan.constitution, source=plan.source,
                      engines=engines, prefect_flow_run_id=prefect_flow_run_id)
    if start.message:
        log(start.message)
    ctx = RunContext(run_id=start.run_id, seed=options.seed or 0, constitution=plan.constitution,
                     params=options.sampling(), config_hash=start.config_hash, rounds=options.rounds,
                     context=options.context)
    flagger = RowFlagger(start.run_id, settings.flags, plan.refusal_patterns)
    writer = open_writer(store)
    source = read_prompts(options.prompts, db=settings.db, limit=options.limit, **_source_args(options))
    if options.shard:
        source = shard_filter(source, parse_shard(options.shard))

    def pipeline(advance: Callable[[RunSummary], None]) -> Awaitable[RunSummary]:
        return run_chains(source, engines, ctx, store, writer, flagger=flagger, judge=options.judge,
                          limit=options.limit, window=window_size(settings), on_prompt_done=advance)

    summary = run_to_end(store, writer, start.run_id, engines, pipeline, total=plan.total,
                         show_progress=show_progress)
    summary.resumed = start.resumed
    if options.judge:  # the SFT run's comparisons use the feedback engine's default mode
        from rlaif.judge.config import default_mode, signal_warning

        mode = default_mode(engines.feedback.name)
        summary.warnings = [w for w in (signal_warning(engines.feedback.name, mode),) if w]
    return _finish(store, settings, summary)


def open_writer(store: "Store") -> "Writer":
    """The run's writer. Flushes run on their own thread, so they never stall the event loop; DuckDB's cache is
    capped during them so the run's memory does not grow with the database file (``Writer._write_bounded``)."""
    from rlaif.store import Writer

    return Writer(store, background=True, memory_limit_mb=WRITER_MEMORY_MB)


def window_size(settings: "Settings") -> int:
    """Chains in flight: twice what either role takes at once (concurrent requests or a batch), so neither idles."""
    return max(max(2 * r.concurrency, 2 * r.batch_size) for r in (settings.policy, settings.feedback))


def run_to_end(store: "Store", writer: "Writer", run_id: str, engines: "Engines",
               pipeline: Callable[[Callable[[Any], None]], Awaitable[S]], *, total: int, show_progress: bool,
               label: str = "generating") -> S:
    """Run ``pipeline(advance)`` under a progress bar, close the engines, flush the writer; returns the summary.

    If the run stops (an error, Ctrl-C), its row is marked ``failed`` (``rlaif.runs.record_failure``) and the
    exception goes on.
    """
    from rlaif.runs import record_failure

    async def go(advance: Callable[[Any], None]) -> S:
        try:
            return await pipeline(advance)
        finally:
            await engines.aclose()

    try:
        with prompt_progress(total, enabled=show_progress, label=label) as advance:
            summary = asyncio.run(go(advance))
        writer.close()
    except BaseException as exc:
        record_failure(store, writer, run_id, exc)
        raise
    return summary


def _finish(store: "Store", settings: "Settings", summary: RunSummary) -> RunSummary:
    """Run-level flags, the summary's flag counts, and the run row's final status."""
    from rlaif.quality import flag_counts, flag_run
    from rlaif.runs import finish_run

    flag_run(store, summary.run_id, settings.flags)
    summary.flags = {f"{r['target']} {r['flag']}": r["rows"] for r in flag_counts(store, summary.run_id)}
    if summary.failed_prompts:
        first = summary.errors[0] if summary.errors else "unknown error"
        finish_run(store, summary.run_id, "partial", f"{summary.failed_prompts} prompts failed; first: {first}")
    else:
        finish_run(store, summary.run_id, "completed")
    return summary


def generate_sft(settings: "Settings", options: "RunOptions", **kwargs) -> RunSummary:
    """``prepare`` then ``run_sft``: the whole run without Prefect (``--no-prefect``, tests, benchmarks)."""
    return run_sft(settings, prepare(settings, options), **kwargs)
