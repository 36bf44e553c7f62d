"""Stage 3: the AI judge labels a pair of responses, under an ensemble of principles, in one of four modes.

Bai et al. 2022 (arXiv 2212.08073, section 4.1) turn each comparison into a multiple-choice question and read
the preference from the feedback model's log-probabilities of the option letters, normalised over the options:
a soft label, not a sampled verdict. They ensemble over principles sampled per comparison, and add a
chain-of-thought variant whose probabilities they clamp to 40-60%. Lee et al. 2023 ("RLAIF", arXiv 2309.00267)
judge both orders and average, which cancels position bias (section 2.1.1), and score single responses 1-10
for direct rewards (d-RLAIF, section 2.2.2).

Kept here: all of that (``rlaif.judge.modes`` has one function per mode and says what each keeps and changes).
Changed: the pair's identity is order-free (``Pair.make`` puts its responses in canonical order), so its
principle draws are too, and judging (b, a) gives exactly 1 - p(a > b); a fourth mode, likelihood contrast,
needs no letters at all, which is what a 135M model can do (docs/judge.md has the measurements); candidates are
fenced and defused before they enter a prompt (``rlaif.judge.defences``); an engine without log-probs gives a
recorded vote, never a made-up probability, and an unreadable answer is a row with NULLs and the raw output.

``judge`` is the stage's entry point for the prefs flow; ``judge_pair``, ``draw_judge_principle`` and
``pair_id`` keep the call of today's ``rlaif/pipeline.py`` working unchanged.
"""

from __future__ import annotations

import asyncio
import random

from rlaif.constitution import Constitution, JudgePrinciple
from rlaif.engines.base import ChoiceResult, Engine, Message, content_hash
from rlaif.errors import ConfigError
from rlaif.judge import modes, prompts
from rlaif.judge.config import JudgeConfig
from rlaif.judge.defences import Guard, guard_for
from rlaif.judge.pairing import Candidate, Pair, pair_id
from rlaif.judge.verdict import Judgement, Verdict

__all__ = ["STAGE", "JudgeConfig", "Judgement", "Verdict", "combine", "draw_judge_principle",
           "draw_judge_principles", "judge", "judge_pair", "judge_principle", "judge_prompt", "pair_id"]

STAGE = modes.STAGE
CHOICES = modes.LETTERS


def draw_judge_principles(constitution: Constitution, run_seed: int, pair: str, m: int) -> list[JudgePrinciple]:
    """``m`` distinct judge principles for a pair, drawn by weight, seeded by the run seed and the pair alone.

    Draws are sequential without replacement: each takes one of the remaining principles by weight. The first
    draw is the single-principle draw of ``draw_judge_principle``.
    """
    remaining = list(constitution.judge_principles)
    if not 1 <= m <= len(remaining):
        raise ConfigError(f"principles must be between 1 and {len(remaining)} (the judge principles of "
                          f"{constitution.name!r}), got {m}")
    rng = random.Random(content_hash("judge-principle", run_seed, pair))
    drawn = []
    for _ in range(m):  # drawn by index: removing by value would compare whole pydantic models
        i = rng.choices(range(len(remaining)), weights=[p.weight for p in remaining], k=1)[0]
        drawn.append(remaining.pop(i))
    return drawn


def draw_judge_principle(constitution: Constitution, run_seed: int, pair: str) -> JudgePrinciple:
    """One judge principle per pair, drawn by weight, seeded by the run seed and the pair alone."""
    return draw_judge_principles(constitution, run_seed, pair, 1)[0]


async def judge_principle(engine: Engine, constitution: Constitution, principle: JudgePrinciple, pair: Pair,
                          config: JudgeConfig, guard: Guard) -> Verdict:
    """One principle's verdict on ``pair`` (canonical order) in ``config.mode``."""
    if config.mode == "choice":
        return await modes.choice_verdict(engine, constitution, principle, pair, guard)
    if config.mode == "cot":
        return await modes.cot_verdict(engine, constitution, principle, pair, guard, config)
    if config.mode == "score":
        return await modes.score_verdict(engine, constitution, principle, pair, guard, config)
    return await modes.contrast_verdict(engine, constitution, principle, pair, guard, config)


async def judge(engine: Engine, constitution: Constitution, pair: Pair, *, config: JudgeConfig | None = None,
                run_seed: int = 0, guard: Guard | None = None) -> Judgement:
    """Input: a pair. Output: a verdict per principle of its ensemble (``config.principles`` drawn for it).

    Engine failures come back as verdicts with status ``failed`` (nothing to store; rerun to retry).
    """
    config = config or JudgeConfig()
    guard = guard or guard_for(engine, constitution)
    principles = draw_judge_principles(constitution, run_seed, pair.pair_id, config.principles)
    if len(principles) == 1:  # the usual case: no task to gather (an SFT run judges every chain)
        return Judgement(pair, (await judge_principle(engine, constitution, principles[0], pair, config, guard),),
                         config)
    verdicts = await asyncio.gather(*(judge_principle(engine, constitution, p, pair, config, guard)
                                      for p in principles))
    return Judgement(pair, tuple(verdicts), config)


# --- the call of today's pipeline ----------------------------------------------------------------------------


def judge_prompt(constitution: Constitution, principle: JudgePrinciple, conversation: list[Message],
                 first: str, second: str, guard: Guard | None = None) -> str:
    """Input: a conversation and two answers in slot order. Output: the raw multiple-choice prompt."""
    guard = guard or guard_for(None, constitution)
    return prompts.choice_prompt(constitution, principle, conversation, first, second, guard)


def combine(principle_id: str, ab: ChoiceResult, ba: ChoiceResult) -> Verdict:
    """Average the two orders: P_A with a first, and P_B with a second, both measure 'a is better'."""
    return modes.read_orders(principle_id, "choice", ab, ba)


async def judge_pair(engine: Engine, constitution: Constitution, principle: JudgePrinciple,
                     conversation: list[Message], a: str, b: str, prompt_id: str | None = None) -> Verdict:
    """Judge ``a`` against ``b`` under one principle, in both orders (choice mode); the verdict is about (a, b)."""
    pair = Pair.make(prompt_id or "", conversation, Candidate(a), Candidate(b))
    verdict = await modes.choice_verdict(engine, constitution, principle, pair, guard_for(engine, constitution))
    return verdict.swapped() if pair.swapped else verdict
