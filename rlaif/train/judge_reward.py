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
import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rlaif.train.reward_sources import JudgeReward

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.constitution import Constitution, JudgePrinciple
    from rlaif.writer import Writer


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


class JudgeScorer:
    """``score_many`` of the judge reward: the 1-10 scores of responses, from ``engine``.

    While ``recorded_in(writer, run_id)`` is open, the engine is wrapped in ``RecordingEngine``: every rating
    request and its tries become ``generations`` / ``attempts`` rows of that run (stage ``judge``), as every other
    engine call of the project is. They go through the run's own writer, so they are stored when its other rows
    are, before the run is marked completed. Outside a run (a unit test, a one-off score) nothing is written.
    """

    def __init__(self, engine: Any, constitution: Constitution):
        self.engine, self.constitution = engine, constitution
        self._recorder: Any = None

    def __call__(self, messages: Sequence[Sequence[dict]], responses: Sequence[str],
                 prompt_ids: Sequence[str]) -> list[float | None]:
        return judge_scores(self._recorder or self.engine, self.constitution, messages, responses, prompt_ids)

    @contextlib.contextmanager
    def recorded_in(self, writer: Writer, run_id: str) -> Iterator[None]:
        """Record the judge's calls as rows of ``run_id`` until the block ends (nested calls share the first)."""
        if self._recorder is not None:  # the RL monitor and the reward may be one judge: record it once
            yield
            return
        from rlaif.recording import RecordingEngine

        self._recorder = RecordingEngine(self.engine, writer, run_id=run_id,
                                         constitution_version=self.constitution.version)
        try:
            yield
        finally:
            self._recorder = None


def judge_reward(settings: Settings, constitution_name: str = "harmless", *, engine: Any = None) -> JudgeReward:
    """A ``judge`` reward source over the feedback role's engine (or ``engine``)."""
    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.engines import create_engine

    constitution = load_constitution(resolve_constitution(constitution_name))
    engine = engine or create_engine(settings, role="feedback")
    return JudgeReward(JudgeScorer(engine, constitution), model=engine.model)
