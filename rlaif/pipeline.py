"""Schedule the supervised CAI chain over a stream of prompts, a bounded window in flight, rows out as they come.

Each prompt runs its own chain as one asyncio task: respond (policy) -> N critique/revision rounds (feedback) ->
optionally the judge on (original, final revision) in both orders. Many prompts are in flight at once, so the
engine sees a continuous stream, never a batch waiting on its slowest member, and no stage barrier leaves it idle.

Prompts stream in and rows stream out through ``rlaif.window``, the bounded window this module shares with the
preference jobs: memory follows the window, not the number of prompts.

The stages own their requests, seeds and rows; this module only decides what runs when and hands rows to the
writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from rlaif.stages import RunContext, skipped_row
from rlaif.stages.compare_revision import judge_revision
from rlaif.stages.critique_revise import critique_revise, revision_rows
from rlaif.stages.respond import respond, response_row
from rlaif.window import ChainRun, run_window

if TYPE_CHECKING:
    from rlaif.engines import Engines
    from rlaif.prompts import PromptRow
    from rlaif.quality import RowFlagger
    from rlaif.store import Store, Writer


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
    warnings: list[str] = field(default_factory=list)  # one line each, printed with the summary
    max_tokens: int = 0  # the run's limit per generated turn, for the summary's advice when rows hit it

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "tokens_per_s": round(self.tokens_per_s, 1)}


class _Run(ChainRun):
    """The state one run's chains share (``rlaif.window.ChainRun``), with the flagger and whether to judge."""

    def __init__(self, engines: "Engines", ctx: RunContext, store: "Store", writer: "Writer",
                 flagger: "RowFlagger", judge: bool):
        super().__init__(engines, ctx, store, writer, RunSummary(run_id=ctx.run_id, max_tokens=ctx.params.max_tokens))
        self.flagger, self.judge = flagger, judge

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
    return await run_window(run, source, limit=limit, window=window, on_prompt_done=on_prompt_done)
