"""The ``judge`` reward: an AI judge rating each response on its own, through the judge stage.

Two judge modes rate one response without a second to compare with, and either can be the reward:
- ``score``: d-RLAIF (Lee et al. 2023, arXiv 2309.00267, section 2.2.2) prompts the judge for a 1-10 score and
  takes the expectation over the score tokens' probabilities (``rlaif.judge.modes.score_response``, the candidate
  fenced and defused against injection); kept from the paper: the expectation and its normalisation to [-1, 1]
  (``reward_sources.judge_to_reward``).
- ``contrast``: the response's pointwise mutual information with the principle's framing, in nats per token
  (``rlaif.judge.modes.contrast_requests``, Holtzman et al. 2021's domain-conditional PMI); mapped onto [-1, 1]
  as 2 sigmoid(PMI / T) - 1 = tanh(PMI / 2T), T the judge's ``contrast_temperature``, which is exactly how the
  pairwise contrast verdict turns two PMIs into p(a > b).
The mode is the one ``rlaif judge eval`` chose for the engine (``rlaif.judge.config.default_mode``), not a fixed
one: a reward is only as good as the judge's measured agreement. Where that mode compares two answers (``choice``,
``cot``), there is no per-answer value to reward, and ``score`` is used, with a line saying so.

Chosen here: every response is rated under the same judge principle, the constitution's highest-weighted one (the
first on a tie), so that rewards of different prompts are on one scale; drawing a principle per prompt would add
its own variance to the reward.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rlaif.errors import ConfigError
from rlaif.train.reward_sources import JudgeReward

POINTWISE = ("score", "contrast")  # the judge modes that rate one response

if TYPE_CHECKING:
    from rlaif.config import Settings
    from rlaif.constitution import Constitution, JudgePrinciple
    from rlaif.writer import Writer


def rating_principle(constitution: Constitution) -> JudgePrinciple:
    """The judge principle every response is rated under: the highest weight, the first on a tie."""
    principles = list(constitution.judge_principles)
    return max(principles, key=lambda p: (p.weight, -principles.index(p)))


def reward_mode(engine_name: str, requested: str | None = None, log: Callable[[str], None] = print) -> str:
    """The mode the reward rates in: ``requested``, else the engine's measured default; a pairwise default falls
    back to ``score`` (one line says so), a pairwise request is refused."""
    from rlaif.judge.config import MODES, default_mode

    mode = requested or default_mode(engine_name)
    if mode not in MODES:
        raise ConfigError(f"judge mode {mode!r}: expected one of {', '.join(MODES)}")
    if mode in POINTWISE:
        return mode
    if requested:
        raise ConfigError(f"judge mode {mode} compares two answers; a reward rates one: use score or contrast")
    log(f"the judge's default mode on {engine_name} is {mode}, which compares two answers; the judge reward rates "
        "each answer in score mode")
    return "score"


async def _contrast(engine: Any, constitution: Constitution, principle: JudgePrinciple, conversation: list,
                    response: str, prompt_id: str) -> float | None:
    """The response's PMI with the principle's framing (nats per token), None when unreadable."""
    from rlaif.judge.defences import guard_for
    from rlaif.judge.modes import contrast_requests, read_contrast

    framed, baseline = contrast_requests(constitution, principle, conversation, response,
                                         guard_for(engine, constitution), engine.model, prompt_id)
    a, b = await asyncio.gather(engine.score(framed), engine.score(baseline))
    return read_contrast(a, b) if a.ok and b.ok else None


def judge_scores(engine: Any, constitution: Constitution, messages: Sequence[Sequence[dict]],
                 responses: Sequence[str], prompt_ids: Sequence[str], mode: str = "score") -> list[float | None]:
    """The judge's raw rating of every response in ``mode`` (score: 1-10; contrast: PMI in nats per token),
    None where it could not be read; all requests in flight."""
    from rlaif.judge.modes import score_response

    principle = rating_principle(constitution)

    async def one(m: Sequence[dict], r: str, p: str) -> float | None:
        if mode == "contrast":
            return await _contrast(engine, constitution, principle, list(m), r, p)
        return (await score_response(engine, constitution, principle, list(m), r, prompt_id=p))[0]

    async def go() -> list[float | None]:
        return list(await asyncio.gather(*(one(m, r, p) for m, r, p in zip(messages, responses, prompt_ids))))

    return asyncio.run(go())


def contrast_to_reward(pmi: float, temperature: float) -> float:
    """PMI (nats per token) onto [-1, 1]: 2 sigmoid(PMI / T) - 1 = tanh(PMI / 2T)."""
    return math.tanh(pmi / (2.0 * temperature))


class JudgeScorer:
    """``score_many`` of the judge reward: the 1-10 scores of responses, from ``engine``.

    While ``recorded_in(writer, run_id)`` is open, the engine is wrapped in ``RecordingEngine``: every rating
    request and its tries become ``generations`` / ``attempts`` rows of that run (stage ``judge``), as every other
    engine call of the project is. They go through the run's own writer, so they are stored when its other rows
    are, before the run is marked completed. Outside a run (a unit test, a one-off score) nothing is written.
    """

    def __init__(self, engine: Any, constitution: Constitution, mode: str = "score"):
        self.engine, self.constitution, self.mode = engine, constitution, mode
        self._recorder: Any = None

    def __call__(self, messages: Sequence[Sequence[dict]], responses: Sequence[str],
                 prompt_ids: Sequence[str]) -> list[float | None]:
        return judge_scores(self._recorder or self.engine, self.constitution, messages, responses, prompt_ids,
                            self.mode)

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


def judge_reward(settings: Settings, constitution_name: str = "harmless", *, engine: Any = None,
                 role: str = "feedback", mode: str | None = None, log: Callable[[str], None] = print) -> JudgeReward:
    """A ``judge`` reward source over ``role``'s engine (or ``engine``), rating in ``mode`` (``reward_mode``).

    ``role="eval"`` is the RL monitor's judge: the evaluation role's engine in that role's mode."""
    from rlaif.constitution import load_constitution, resolve_constitution
    from rlaif.engines import create_engine
    from rlaif.judge.config import JudgeConfig

    constitution = load_constitution(resolve_constitution(constitution_name))
    if role == "eval" and mode is None and settings is not None:
        mode = settings.eval.mode
    engine = engine or create_engine(settings, role=role)  # type: ignore[arg-type]
    chosen = reward_mode(engine.name, mode, log)
    scale = JudgeConfig().contrast_temperature
    to_reward = (lambda v: contrast_to_reward(v, scale)) if chosen == "contrast" else None
    return JudgeReward(JudgeScorer(engine, constitution, chosen), model=engine.model, mode=chosen,
                       engine=engine.name, to_reward=to_reward)
