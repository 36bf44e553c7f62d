"""Judge a chain's original answer against its final revision: the pair an SL-CAI chain yields.

Bai et al. 2022 (arXiv 2212.08073) train the preference model of their RL phase on pairs sampled from the SL
model; pairing the policy's answer with its own revision, as here, is a cheap stand-in that gives
``preference_dataset`` rows from the same run (the revision is expected to win). The judging itself is
``rlaif.stages.judge.judge``, in the feedback engine's measured default mode (``rlaif.judge.config.default_mode``;
on SmolLM2 no mode beats the baselines that cannot read, docs/judge.md), under one principle
drawn for the pair. This module is the one place the SFT pipeline calls the judge, and it owns the pair and its
``comparisons`` rows.
"""

from __future__ import annotations

from rlaif.engines.base import Engine
from rlaif.judge.config import default_config
from rlaif.judge.pairing import Candidate, Pair
from rlaif.judge.rows import comparison_rows
from rlaif.prompts import PromptRow
from rlaif.stages import RunContext
from rlaif.stages.judge import judge


async def judge_revision(ctx: RunContext, prompt: PromptRow, chain_id: str, original: str, final: str,
                         engine: Engine, *, policy_model: str | None = None) -> tuple[list[dict], str | None]:
    """The ``comparisons`` rows of (original, final) judged by the feedback engine, or no rows and the error."""
    pair = Pair.make(prompt.prompt_id, prompt.messages, Candidate(original, "original", policy_model),
                     Candidate(final, "revision"), chain_id=chain_id)
    judgement = await judge(engine, ctx.constitution, pair, config=default_config(engine.name),
                            run_seed=ctx.seed)
    if judgement.failed:
        return [], judgement.failed[0].error
    return comparison_rows(judgement, run_id=ctx.run_id, constitution=ctx.constitution, judge_engine=engine.name,
                           judge_model=engine.model), None
