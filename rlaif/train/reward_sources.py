"""The reward sources that need a model: a trained reward model, and the AI judge's direct score (d-RLAIF).

Both turn a ``RewardBatch`` into one value per response (``rlaif.train.rewards``). The reward model is i10's
``RewardScorer`` (the same tokenization as its training, normalised with its saved statistics); the judge is the
feedback role's engine asked for a 1-10 score per answer through the judge stage's direct-score mode, the
expectation over the score tokens' probabilities, mapped from [1, 10] onto [-1, 1].
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from rlaif.train.rewards import RewardBatch, SourceScores


class RewardModelReward:
    """``rm:CKPT``: the normalised reward of a model trained by ``rlaif train rm``."""

    def __init__(self, path: Path, *, device: Any = None):
        from rlaif.train.reward_model import RewardScorer

        self.path = Path(path)
        self.scorer = RewardScorer(self._folder(self.path), device=str(device) if device is not None else "auto")
        self.source = f"rm:{path}"
        self.model = self.scorer.identity

    @staticmethod
    def _folder(path: Path) -> Path:
        """The reward model folder itself, or a training output folder's ``final``."""
        return path / "final" if (path / "final" / "reward_model.json").is_file() else path

    def score(self, batch: RewardBatch) -> SourceScores:
        normalised, raw = self.scorer.score([list(m) for m in batch.messages], list(batch.responses))
        return SourceScores([float(v) for v in normalised], [f"raw {r:.4f}" for r in raw])


def judge_to_reward(score: float) -> float:
    """A 1-10 judge score mapped linearly onto [-1, 1] (d-RLAIF normalises its scores to that range)."""
    return (score - 5.5) / 4.5


class JudgeReward:
    """``judge``: the AI judge scoring each response directly (d-RLAIF, Lee et al. 2023, section 2.4).

    ``score_many(messages, responses) -> list[float | None]`` returns the judge's raw rating per response (the
    1-10 expectation in score mode, the PMI in contrast mode), None where it could not be read (a parse failure is
    data, never a default score); ``to_reward`` maps it onto [-1, 1]. It is built by
    ``rlaif.train.judge_reward.judge_reward`` over the feedback role's engine (the monitor's: the eval role's).
    """

    def __init__(self, score_many: Callable[[Sequence[Sequence[dict]], Sequence[str], Sequence[str]],
                                            list[float | None]], *, model: str, mode: str = "score",
                 engine: str = "", to_reward: Callable[[float], float] | None = None):
        self.score_many = score_many
        self.source = "judge"
        self.model, self.mode, self.engine = model, mode, engine
        self.to_reward = to_reward or judge_to_reward  # score mode: 1-10 onto [-1, 1]

    @property
    def identity(self) -> tuple[str, str, str]:
        """(engine, model, mode): two judge sources with one identity give the same values."""
        return self.engine, self.model, self.mode

    def recorded_in(self, writer: Any, run_id: str) -> AbstractContextManager[None]:
        """While open, the judge's engine calls are rows of ``run_id`` in ``writer`` (``judge_reward.JudgeScorer``)."""
        hook = getattr(self.score_many, "recorded_in", None)
        return hook(writer, run_id) if hook is not None else contextlib.nullcontext()

    def score(self, batch: RewardBatch) -> SourceScores:
        raw = self.score_many([list(m) for m in batch.messages], list(batch.responses), list(batch.prompt_ids))
        values = [self.to_reward(s) if s is not None else None for s in raw]
        unit = "of 10" if self.mode == "score" else "nats/token PMI"
        details = [f"score {s:.3f} {unit}" if s is not None else "the judge's score could not be read" for s in raw]
        return SourceScores(values, details)
