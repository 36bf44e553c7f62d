"""What the judge says about one pair under one principle, and about one pair over its principle ensemble.

A ``Verdict`` is always about ``a`` and ``b`` of a ``Pair`` (canonical order); ``Verdict.swapped()`` is the same
verdict read from the other side, built from exact complements, so that judging (b, a) gives exactly
1 - p(a > b) (``arithmetic.snap`` makes the complement exact).

``status`` separates three outcomes:

- ``ok``: the verdict has a probability (``p_a``) or, from an engine without log-probs, a vote (``vote_a``).
- ``parse_failed``: the engine answered but nothing could be read from it; ``raw`` keeps what it said and every
  number is None. Such a verdict is still a row (failures counted in SQL), never a default score.
- ``failed``: an engine call failed for good (``error``); no row is written, so the next run retries it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from rlaif.engines.base import ChoiceResult
from rlaif.judge.arithmetic import consistent as both_agree
from rlaif.judge.config import JudgeConfig, Mode
from rlaif.judge.pairing import Pair

Status = Literal["ok", "parse_failed", "failed"]
Method = Literal["logprobs", "structured", "likelihood"]


def _flip(p: float | None) -> float | None:
    return None if p is None else 1.0 - p


@dataclass(frozen=True)
class Verdict:
    """One principle's verdict on a pair. Probabilities are P(a better); ``_ab`` has a in the first slot."""

    principle_id: str
    mode: Mode
    method: Method
    status: Status = "ok"
    p_a: float | None = None  # debiased (choice, cot) or from the two responses' scores (score, contrast)
    p_a_ab: float | None = None  # choice/cot: read with a shown first
    p_a_ba: float | None = None  # choice/cot: read with a shown second
    vote_a: float | None = None  # structured fallback: share of the orders whose bare decision picked a
    score_a: float | None = None  # score: E[rating]; contrast: PMI in nats per token
    score_b: float | None = None
    rationale_ab: str | None = None  # cot
    rationale_ba: str | None = None
    raw: str | None = None  # parse failures: what the engine said
    error: str | None = None
    keys: dict[str, str] = field(default_factory=dict)  # what each generations key was for ('ab', 'ba', ...)
    ab: ChoiceResult | None = None  # choice/cot: the two readings, for callers that want the raw results
    ba: ChoiceResult | None = None

    @property
    def consistent(self) -> bool | None:
        """Position consistency: both orders prefer the same response (None for modes without orders)."""
        if self.p_a_ab is not None and self.p_a_ba is not None:
            return both_agree(self.p_a_ab, self.p_a_ba)
        if self.vote_a is not None and self.mode in ("choice", "cot"):
            return self.vote_a in (0.0, 1.0)
        return None

    @property
    def order_gap(self) -> float | None:
        """|P_ab(a better) - P_ba(a better)|: 0 for a judge with no position bias on this pair."""
        if self.p_a_ab is None or self.p_a_ba is None:
            return None
        return abs(self.p_a_ab - self.p_a_ba)

    @property
    def decision(self) -> float | None:
        """The number the preference follows: the probability, else the vote."""
        return self.p_a if self.p_a is not None else self.vote_a

    def swapped(self) -> Verdict:
        """This verdict about (b, a): complements of every probability, the two sides' fields exchanged."""
        keys = {_swap_key(k): v for k, v in self.keys.items()}
        return replace(self, p_a=_flip(self.p_a), p_a_ab=_flip(self.p_a_ba), p_a_ba=_flip(self.p_a_ab),
                       vote_a=_flip(self.vote_a), score_a=self.score_b, score_b=self.score_a,
                       rationale_ab=self.rationale_ba, rationale_ba=self.rationale_ab, keys=keys,
                       ab=self.ba, ba=self.ab)


def _swap_key(role: str) -> str:
    table = {"ab": "ba", "ba": "ab", "a": "b", "b": "a"}
    head, _, tail = role.partition("_")
    return table.get(head, head) + ("_" + tail if tail else "")


@dataclass(frozen=True)
class Judgement:
    """Every principle's verdict on one pair, in one mode: what ``comparison_rows`` stores."""

    pair: Pair
    verdicts: tuple[Verdict, ...]
    config: JudgeConfig

    @property
    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "failed"]

    @property
    def p_a(self) -> float | None:
        """The ensemble's P(a better): the mean over principles with a probability (the dataset's average)."""
        values = [v.p_a for v in self.verdicts if v.p_a is not None]
        return sum(values) / len(values) if values else None
