"""Run a preference job end to end: validate, open the store and engines, run the pipeline, flag, record.

The same shape as ``rlaif.runner`` for SFT runs, and the same guarantees: ``prepare_prefs`` checks everything
the user controls (options, constitution, the whole source, the canaries) and writes nothing, so a mistake stops
the run before its first row; ``run_prefs`` resumes the run of the same configuration or starts a new one
(``rlaif.runs.start_run``, which says in one line why it is not resuming), streams the jobs through
``rlaif.prefs.pipeline``, writes the pair flags and records how the run ended. ``flows/rl_cai.py`` calls the two
inside Prefect tasks; tests and ``--no-prefect`` call ``generate_prefs``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rlaif.judge.canaries import CANARY_EVERY
from rlaif.prefs.pipeline import Judging, PrefsSummary, run_jobs
from rlaif.prefs.work import count_work, pair_jobs, prompt_jobs, run_store, source_identity
from rlaif.prefs.work import run_jobs as sl_cai_jobs

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.constitution import Constitution
    from rlaif.engines import Engines
    from rlaif.judge.canaries import Canary
    from rlaif.options import PrefsOptions


@dataclass(frozen=True)
class PrefsPlan:
    """A validated preference run, nothing written yet: seed and judge mode filled in, the total counted."""

    options: "PrefsOptions"
    constitution: "Constitution"
    source: str  # the source's identity (rlaif.prefs.work.source_identity)
    total: int
    bad_rows: int
    canaries: tuple["Canary", ...]


class NoPolicy:
    """The policy role of a run whose candidates are given (a pair file, an SL-CAI run): no engine runs it.

    The run row records engine ``none``; the responses' own models are on the comparisons (``policy_model``).
    """

    name = "none"
    model = "none"

    async def aclose(self) -> None:
        return None


def prepare_prefs(settings: "Settings", options: "PrefsOptions") -> PrefsPlan:
    """Check the options, constitution, source and canaries; raise one UserError line, write nothing."""
    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.judge.canaries import load_canaries
    from rlaif.judge.config import default_mode
    from rlaif.stages.judge import draw_judge_principles

    options = options.with_seed(settings.seed).with_judge_mode(default_mode(settings.feedback.engine))
    constitution = load_constitution(resolve_constitution(options.constitution))
    draw_judge_principles(constitution, 0, "", options.principles)  # --principles fits the constitution
    total, bad = count_work(options, settings.db)
    return PrefsPlan(options, constitution, source_identity(options), total, bad, tuple(load_canaries()))


def open_prefs_engines(settings: "Settings", options: "PrefsOptions") -> "Engines":
    """Both roles when candidates are sampled; only the feedback role when they are given."""
    from rlaif.engines import Engines, create_engine, open_engines

    if options.prompts is not None:
        return open_engines(settings)
    return Engines(NoPolicy(), create_engine(settings, "feedback"))  # type: ignore[arg-type]


def _source(settings: "Settings", options: "PrefsOptions") -> Any:
    if options.pairs is not None:
        return pair_jobs(options, settings.db)
    if options.from_run is not None:
        return sl_cai_jobs(run_store(settings.db), options.from_run)
    return prompt_jobs(options, settings.db)


def run_prefs(
    settings: "Settings",
    plan: PrefsPlan,
    *,
    kind: str = "prefs",
    engines: "Engines | None" = None,
    show_progress: bool = True,
    prefect_flow_run_id: str | None = None,
    canary_every: int = CANARY_EVERY,
    log: Callable[[str], None] = print,
) -> PrefsSummary:
    """Sample (or take), pair and judge every job of a prepared run; returns its summary.

    The run row ends ``completed``, ``partial`` (some engine calls failed for good: the next run retries just
    those), or ``failed`` if the run itself stopped; buffered rows are flushed first.
    """
    from rlaif.runner import open_store, open_writer, run_to_end, window_size
    from rlaif.runs import start_run
    from rlaif.stages import RunContext

    options = plan.options
    engines = engines or open_prefs_engines(settings, options)
    store = open_store(settings)
    start = start_run(store, kind=kind, options=options, constitution=plan.constitution, source=plan.source,
                      engines=engines, prefect_flow_run_id=prefect_flow_run_id)  # type: ignore[arg-type]
    if start.message:
        log(start.message)
    ctx = RunContext(run_id=start.run_id, seed=options.seed or 0, constitution=plan.constitution,
                     params=options.sampling(), config_hash=start.config_hash)
    judging = Judging(options.judge_config(), options.samples, options.max_pairs, plan.canaries, canary_every)
    writer = open_writer(store)  # as SFT runs write

    def pipeline(advance: Callable[[PrefsSummary], None]) -> Awaitable[PrefsSummary]:
        return run_jobs(_source(settings, options), engines, ctx, store, writer, judging, limit=options.limit,
                        window=window_size(settings), on_prompt_done=advance)

    summary = run_to_end(store, writer, start.run_id, engines, pipeline, total=plan.total,
                         show_progress=show_progress, label="judging")
    summary.resumed = start.resumed
    summary.candidates_from = "policy" if options.prompts else "run" if options.from_run else "file"
    from rlaif.judge.config import signal_warning

    summary.warnings = [w for w in (signal_warning(engines.feedback.name, options.judge_config().mode),) if w]
    return _finish(store, summary)


def _finish(store: Any, summary: PrefsSummary) -> PrefsSummary:
    """Pair flags, the summary's flag counts, and the run row's final status."""
    from rlaif.judge.flags import PairFlagSettings, write_pair_flags
    from rlaif.quality import flag_counts
    from rlaif.runs import finish_run

    write_pair_flags(store, summary.run_id, PairFlagSettings())
    summary.flags = {f"{r['target']} {r['flag']}": r["rows"] for r in flag_counts(store, summary.run_id)}
    if summary.failed_prompts or summary.canary_failures:
        first = summary.errors[0] if summary.errors else "unknown error"
        finish_run(store, summary.run_id, "partial",
                   f"{summary.failed_prompts} prompts and {summary.canary_failures} canary checks failed; "
                   f"first: {first}")
    else:
        finish_run(store, summary.run_id, "completed")
    return summary


def generate_prefs(settings: "Settings", options: "PrefsOptions", **kwargs: Any) -> PrefsSummary:
    """``prepare_prefs`` then ``run_prefs``: the whole run without Prefect (``--no-prefect``, tests, benchmarks)."""
    return run_prefs(settings, prepare_prefs(settings, options), **kwargs)
