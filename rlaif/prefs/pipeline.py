"""Schedule preference jobs over a bounded window: each prompt's chain samples, pairs and judges on its own.

Each job (``rlaif.prefs.work.Job``) runs as one asyncio task: sample K candidates from the policy (unless the
pairs are given), pair them, then judge every pair on the feedback role, all orders and principles at once. A
prompt's pairs are judged as soon as its own candidates exist, while other prompts are still sampling, so when
the two roles are different endpoints both stay busy; with one engine the two kinds of request share its queue.

As in ``rlaif.pipeline`` (the SFT chains), jobs stream in a window at a time, each window's stored results are
fetched in one query, and rows stream out through the writer. A prompt's stored results are dropped once no job
in flight holds it (a pair file may bring several pairs of one prompt). Canary pairs are judged at the start and
once per ``canary_every`` pairs (``rlaif.judge.canaries``); their stored results stay loaded for the whole run.
The stages own every request, seed and row; this module decides what runs when and counts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rlaif.judge.calls import SharedCalls
from rlaif.judge.canaries import CANARY_EVERY, Canary, canaries_due, canary_for, canary_rows, judge_canary
from rlaif.judge.defences import guard_for
from rlaif.judge.rows import comparison_rows
from rlaif.prefs.work import Job
from rlaif.stages import RunContext, overflow_from_error, skipped_row
from rlaif.stages.judge import judge
from rlaif.stages.sample import candidate_rows, sample, sample_pairs
from rlaif.window import ChainRun, run_window

if TYPE_CHECKING:
    from rlaif.engines import Engines
    from rlaif.judge.config import JudgeConfig
    from rlaif.judge.pairing import Pair
    from rlaif.judge.verdict import Judgement
    from rlaif.prompts import PromptRow
    from rlaif.store import Store, Writer


@dataclass
class PrefsSummary:
    """What a preference run did, printed at its end and returned by the flow."""

    run_id: str
    candidates_from: str = "policy"  # 'policy' (sampled), 'run' (an SL-CAI run's revisions) or 'file' (pairs)
    prompts: int = 0  # jobs that entered the run (prompts; pairs, with a pair file)
    candidates: int = 0  # non-empty samples from the policy
    empty_candidates: int = 0  # samples that came back empty: stored as NULL, never paired
    pairs: int = 0  # pairs to judge
    judged: int = 0  # pairs whose every verdict is stored
    verdicts: int = 0  # comparisons rows (one per pair and principle)
    parse_failures: int = 0  # of which the judge's answer could not be read (numbers NULL, raw output kept)
    canaries: int = 0  # canary checks judged
    canary_verdicts: int = 0
    canary_correct: int = 0  # canary verdicts that preferred the known-better response
    canary_failures: int = 0  # canary checks whose engine calls failed (the next run retries them)
    failed_prompts: int = 0  # an engine call failed for good; the next run retries it
    skipped_prompts: int = 0  # a request would not fit the context (table skipped_prompts)
    bad_rows: int = 0
    engine_calls: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    reused: int = 0  # results answered from the database instead of the engine
    resumed: bool = False
    flags: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # one line each, printed with the summary

    @property
    def rows(self) -> int:
        """Pairs judged: what the progress bar counts as rows."""
        return self.judged

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "rows": self.rows, "tokens_per_s": round(self.tokens_per_s, 1)}


@dataclass(frozen=True)
class Judging:
    """How a run makes and judges pairs: the judge's options, candidates per prompt, the per-prompt cap."""

    config: "JudgeConfig"
    samples: int = 2
    max_pairs: int | None = None
    canaries: tuple[Canary, ...] = ()
    canary_every: int = CANARY_EVERY


class _Run(ChainRun):
    """State the chains of one run share (``rlaif.window.ChainRun``), with the judge, its guard and canaries."""

    def __init__(self, engines: "Engines", ctx: RunContext, store: "Store", writer: "Writer", judging: Judging):
        super().__init__(engines, ctx, store, writer, PrefsSummary(run_id=ctx.run_id))
        self.judging = judging
        self.judge_engine = SharedCalls(self.feedback)  # one call per distinct request, e.g. contrast scores
        self.guard = guard_for(self.feedback, ctx.constitution)
        self.pinned = {c.pair.prompt_id for c in judging.canaries}
        self.holding: dict[str, int] = {}
        self.pairs_done = 0
        self.canary_seq = 0

    def prompt_of(self, item: Job) -> "PromptRow":
        return item.prompt

    async def begin(self) -> None:
        """Load the canaries' stored results for the whole run, and start the first check."""
        await asyncio.to_thread(self.stored.load, sorted(self.pinned))
        self.canaries_due()

    # -- holding stored results ------------------------------------------------------------------------------

    def hold(self, prompt_id: str) -> bool:
        """Count a job in flight for this prompt; True when its stored results still need loading."""
        self.holding[prompt_id] = self.holding.get(prompt_id, 0) + 1
        return self.holding[prompt_id] == 1 and prompt_id not in self.pinned

    def let_go(self, prompt_id: str) -> None:
        left = self.holding.pop(prompt_id) - 1
        if left:
            self.holding[prompt_id] = left
        elif prompt_id not in self.pinned:
            self.stored.release(prompt_id)

    # -- one job ---------------------------------------------------------------------------------------------

    async def chain(self, job: Job) -> None:
        """Sample and pair (unless the pairs are given), then judge every pair; failures end the chain.

        Nothing that depends on a failed call is written, so the next run redoes exactly that part: a failed
        sample leaves the prompt unpaired (pairing needs all K, since the cap draws among them), and a failed
        verdict leaves its principle's row out.
        """
        pairs = job.pairs
        if pairs is None:
            pairs = await self._candidates(job.prompt)
            if pairs is None:
                return
        self.summary.pairs += len(pairs)
        judgements = await asyncio.gather(*(self._judge(p) for p in pairs))
        self.pairs_done += len(pairs)
        self.canaries_due()
        self._store(job.prompt, judgements)

    async def _candidates(self, prompt: "PromptRow") -> tuple["Pair", ...] | None:
        ctx, s = self.ctx, self.summary
        samples = await sample(ctx, prompt, self.policy, self.judging.samples)
        if samples.overflow is not None:
            s.skipped_prompts += 1
            self.write("skipped_prompts", [skipped_row(ctx, prompt.prompt_id, "sample", None, samples.overflow)])
            return None
        self.write("candidates", candidate_rows(ctx, samples))
        if samples.error is not None:
            self.failed(prompt, "sample", samples.error)
            return None
        texts = samples.texts()
        s.candidates += sum(t is not None for t in texts)
        s.empty_candidates += sum(t is None for t in texts)
        return tuple(sample_pairs(ctx, samples, self.judging.max_pairs))

    async def _judge(self, pair: "Pair") -> "Judgement":
        return await judge(self.judge_engine, self.ctx.constitution, pair, config=self.judging.config,
                           run_seed=self.ctx.seed, guard=self.guard)

    def _store(self, prompt: "PromptRow", judgements: list["Judgement"]) -> None:
        s, error = self.summary, None
        for judgement in judgements:
            rows = comparison_rows(judgement, run_id=self.ctx.run_id, constitution=self.ctx.constitution,
                                   judge_engine=self.feedback.name, judge_model=self.feedback.model)
            self.write("comparisons", rows)
            s.verdicts += len(rows)
            s.parse_failures += sum(r["status"] == "parse_failed" for r in rows)
            if judgement.failed:
                error = error or judgement.failed[0].error
            else:
                s.judged += 1
        if error is None:
            return
        overflow = overflow_from_error(error)
        if overflow is None:
            return self.failed(prompt, "judge", error)
        s.skipped_prompts += 1  # the judge prompt itself is too long for the feedback model: data, not a fault
        self.write("skipped_prompts", [skipped_row(self.ctx, prompt.prompt_id, "judge", None, overflow)])

    # -- canaries --------------------------------------------------------------------------------------------

    def canaries_due(self) -> None:
        """Start the canary checks due now (one at the start, then one per ``canary_every`` pairs)."""
        if not self.judging.canaries:
            return
        for _ in range(canaries_due(self.pairs_done, self.canary_seq, self.judging.canary_every)):
            task = asyncio.create_task(self._canary(self.canary_seq))
            self.canary_seq += 1
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def _canary(self, seq: int) -> None:
        ctx, s = self.ctx, self.summary
        canary = canary_for(list(self.judging.canaries), seq, ctx.seed)
        try:
            judgement = await judge_canary(self.judge_engine, ctx.constitution, canary,
                                           config=self.judging.config, run_seed=ctx.seed, guard=self.guard)
        except Exception as exc:  # like a chain: a bug in one check must not sink the run
            s.canary_failures += 1
            return self.note(f"canary {canary.id}: {type(exc).__name__}: {exc}")
        rows = canary_rows(canary, judgement, run_id=ctx.run_id, seq=seq, constitution=ctx.constitution,
                           judge_engine=self.feedback.name, judge_model=self.feedback.model)
        self.write("canary_results", rows)
        s.canaries += 1
        s.canary_verdicts += len(rows)
        s.canary_correct += sum(r["correct"] is True for r in rows)
        if judgement.failed:
            s.canary_failures += 1
            self.note(f"canary {canary.id}: {judgement.failed[0].error}")


async def run_jobs(
    source: Iterable[Any],
    engines: "Engines",
    ctx: RunContext,
    store: "Store",
    writer: "Writer",
    judging: Judging,
    *,
    limit: int | None = None,
    window: int = 256,
    on_prompt_done: Callable[[PrefsSummary], None] | None = None,
) -> PrefsSummary:
    """Run every job of ``source`` (Job or BadRow items), ``window`` in flight; returns the run's summary."""
    run = _Run(engines, ctx, store, writer, judging)
    return await run_window(run, source, limit=limit, window=window, on_prompt_done=on_prompt_done)
