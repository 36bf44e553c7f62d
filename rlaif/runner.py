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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from rlaif.pipeline import RunSummary, run_chains
from rlaif.progress import prompt_progress

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.constitution import Constitution
    from rlaif.engines import Engines
    from rlaif.options import RunOptions
    from rlaif.store import Store



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
    return Plan(options, constitution, source_identity(options.prompts), check.count, check.bad_total, patterns)


def open_store(settings: "Settings") -> "Store":
    """The project database, migrated to the current schema."""
    from rlaif.store import Store

    store = Store(settings.db)
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
    from rlaif.sources import read_prompts
    from rlaif.runs import start_run
    from rlaif.stages import RunContext
    from rlaif.store import Writer

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
    # Flushes run on their own thread, so they never stall the event loop; DuckDB's cache is capped during them
    # so the run's memory does not grow with the database file (Writer._write_bounded).
    writer = Writer(store, background=True, memory_limit_mb=WRITER_MEMORY_MB)
    roles = (settings.policy, settings.feedback)
    window = max(max(2 * r.concurrency, 2 * r.batch_size) for r in roles)
    source = read_prompts(options.prompts, db=settings.db, limit=options.limit, **_source_args(options))

    async def go(advance: Callable[[RunSummary], None]) -> RunSummary:
        try:
            return await run_chains(source, engines, ctx, store, writer, flagger=flagger, judge=options.judge,
                                    limit=options.limit, window=window, on_prompt_done=advance)
        finally:
            await engines.aclose()

    try:
        with prompt_progress(plan.total, enabled=show_progress) as advance:
            summary = asyncio.run(go(advance))
        writer.close()
    except BaseException as exc:
        _record_failure(store, writer, start.run_id, exc)
        raise
    summary.resumed = start.resumed
    return _finish(store, settings, summary)


def _record_failure(store: "Store", writer, run_id: str, exc: BaseException) -> None:
    """Record the failure even if the buffered rows cannot be written (the same fault may be why we are here)."""
    from rlaif.runs import finish_run

    try:
        writer.close()
    except Exception as flush_exc:
        exc.add_note(f"buffered rows were not written: {flush_exc}")
    finish_run(store, run_id, "failed", f"{type(exc).__name__}: {exc}")


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
