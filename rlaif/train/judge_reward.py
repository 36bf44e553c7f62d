"""The ``judge`` reward: the feedback role's AI judge rating each response 1-10 (d-RLAIF), through the judge stage.

Lee et al. 2023 (RLAIF, arXiv 2309.00267, section 2.2.2) prompt the judge for a 1-10 score and take the
expectation over the score tokens' probabilities; ``rlaif.judge.modes.score_response`` does exactly that (with
the candidate fenced and defused against injection). Kept from the paper: the expectation, and its
normalisation to [-1, 1] (``reward_sources.judge_to_reward``). Chosen here: every response is rated under the
same judge principle, the constitution's highest-weighted one (the first on a tie), so that rewards of
different prompts are on one scale; drawing a principle per prompt would add its own variance to the reward.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rlaif.train.reward_sources import JudgeReward

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.constitution import Constitution, JudgePrinciple


def rating_principle(constitution: Constitution) -> JudgePrinciple:
    """The judge principle every response is rated under: the highest weight, the first on a tie."""
    principles = list(constitution.judge_principles)
    return max(principles, key=lambda p: (p.weight, -principles.index(p)))


def judge_scores(engine: Any, constitution: Constitution, messages: Sequence[Sequence[dict]],
                 responses: Sequence[str], prompt_ids: Sequence[str]) -> list[float | None]:
    """The judge's 1-10 score of every response (None where it could not be read), all requests in flight."""
    from rlaif.judge.modes import score_response

    principle = rating_principle(constitution)

    async def go() -> list[Any]:
        return list(await asyncio.gather(*(
            score_response(engine, constitution, principle, list(m), r, prompt_id=p)
            for m, r, p in zip(messages, responses, prompt_ids))))

    return [score for score, _ in asyncio.run(go())]


def judge_reward(settings: Settings, constitution_name: str = "harmless", *, engine: Any = None) -> JudgeReward:
    """A ``judge`` reward source over the feedback role's engine (or ``engine``)."""
    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.engines import create_engine

    constitution = load_constitution(resolve_constitution(constitution_name))
    engine = engine or create_engine(settings, role="feedback")

    def score_many(messages: Sequence[Sequence[dict]], responses: Sequence[str],
                   prompt_ids: Sequence[str]) -> list[float | None]:
        return judge_scores(engine, constitution, messages, responses, prompt_ids)

    return JudgeReward(score_many, model=engine.model)
