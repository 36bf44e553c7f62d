"""Judge a chain's original answer against its final revision, in both orders: the pair an SL-CAI chain yields.

Bai et al. 2022 (arXiv 2212.08073) train the preference model of their RL phase on pairs sampled from the SL
model; pairing the policy's answer with its own revision, as here, is a cheap stand-in that gives
``preference_dataset`` rows from the same run (the revision is expected to win). The judging itself, the
multiple-choice question read from log-probs in both orders (section 4.1; Lee et al. 2023), is
``rlaif.stages.judge``; this module is the one place the SFT pipeline calls it, and it owns the pair's seed
(the judge principle's draw) and its ``comparisons`` row.
"""

from __future__ import annotations

from rlaif.engines.base import Engine, content_hash
from rlaif.prompts import PromptRow
from rlaif.stages import RunContext
from rlaif.stages.judge import Verdict, draw_judge_principle, judge_pair, pair_id
from rlaif.store import utcnow


async def judge_revision(ctx: RunContext, prompt: PromptRow, chain_id: str, original: str, final: str,
                         engine: Engine) -> tuple[dict | None, str | None]:
    """The ``comparisons`` row of (original, final) judged by the feedback engine, or None and the error."""
    pair = pair_id(prompt.prompt_id, original, final)
    principle = draw_judge_principle(ctx.constitution, ctx.seed, pair)
    verdict = await judge_pair(engine, ctx.constitution, principle, list(prompt.messages), original, final,
                               prompt.prompt_id)
    if verdict.p_a is None:
        return None, verdict.ab.error or verdict.ba.error
    return comparison_row(ctx, pair, chain_id, verdict, prompt, original, final, engine.model), None


def comparison_row(ctx: RunContext, pair: str, chain_id: str, v: Verdict, prompt: PromptRow, a: str, b: str,
                   judge_model: str) -> dict:
    """One ``comparisons`` row: a is the original answer, b the final revision."""
    constitution = ctx.constitution
    return {
        "comparison_id": content_hash("comparison", pair, v.principle_id, judge_model, ctx.constitution_version),
        "pair_id": pair, "run_id": ctx.run_id, "prompt_id": prompt.prompt_id, "chain_id": chain_id,
        "principle_id": v.principle_id, "response_a": a, "response_b": b,
        "source_a": "original", "source_b": "revision", "key_ab": v.ab.key, "key_ba": v.ba.key,
        "p_a_ab": v.p_a_ab, "p_a_ba": v.p_a_ba, "p_a": v.p_a, "consistent": v.consistent,
        "method": v.ab.method, "judge_model": judge_model, "constitution_name": constitution.name,
        "constitution_version": ctx.constitution_version, "created_at": utcnow(),
    }
