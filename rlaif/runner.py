"""Run a generation job end to end: open the store, build the engine, run the pipeline, record the run.

Flows (``flows/``) call ``run_generation`` inside a Prefect task; tests and ``--no-prefect`` call it directly.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Sequence

from rlaif.pipeline import CaiConfig, RunSummary, finish_run, new_run_id, run_cai, start_run
from rlaif.progress import prompt_progress

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.constitution import Constitution
    from rlaif.engines.base import Engine
    from rlaif.prompts import PromptRow
    from rlaif.store import Store


def open_store(settings: "Settings") -> "Store":
    """The project database, migrated to the current schema."""
    from rlaif.store import Store

    store = Store.from_settings(settings)  # the lock policy: lock_wait_s, on_locked
    store.migrate()
    return store


def run_generation(
    settings: "Settings",
    constitution: "Constitution",
    prompts: Sequence["PromptRow"],
    config: CaiConfig,
    *,
    kind: str = "demo",
    engine: "Engine | None" = None,
    show_progress: bool = True,
    prefect_flow_run_id: str | None = None,
) -> RunSummary:
    """Generate SFT and preference rows for ``prompts``; returns the run's summary.

    The run row ends ``completed`` when every chain finished, ``partial`` when some engine calls failed for good
    (they are in the attempts table, and the next run retries just those), and ``failed`` if the run itself
    stopped; buffered rows are flushed first.
    """
    from rlaif.engines import create_engine
    from rlaif.store import Writer

    store = open_store(settings)
    engine = engine or create_engine(settings)
    run_id = new_run_id()
    params = {"prompts": len(prompts), **config.__dict__, "seed": settings.seed}
    start_run(store, run_id=run_id, kind=kind, params=params, constitution=constitution, engine=engine,
              seed=settings.seed, prefect_flow_run_id=prefect_flow_run_id)
    writer = Writer(store, background=True)  # flushes never stall the event loop
    window = max(2 * settings.concurrency, 2 * settings.batch_size)

    async def go(advance) -> RunSummary:
        try:
            return await run_cai(prompts, engine, constitution, store, writer, run_id=run_id, config=config,
                                 run_seed=settings.seed, window=window, on_prompt_done=advance)
        finally:
            await engine.aclose()

    try:
        with prompt_progress(len(prompts), enabled=show_progress) as advance:
            summary = asyncio.run(go(advance))
        writer.close()
    except BaseException as exc:
        # Record the failure even if the buffered rows cannot be written (the same fault may be why we are here).
        try:
            writer.close()
        except Exception as flush_exc:
            exc.add_note(f"buffered rows were not written: {flush_exc}")
        finish_run(store, run_id, "failed", f"{type(exc).__name__}: {exc}")
        raise
    if summary.failed_prompts:
        first = summary.errors[0] if summary.errors else "unknown error"
        finish_run(store, run_id, "partial", f"{summary.failed_prompts} prompts failed; first: {first}")
    else:
        finish_run(store, run_id, "completed")
    return summary
