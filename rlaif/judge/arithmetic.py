"""The judge's probability arithmetic: pure functions of numbers, each small enough to check by hand.

- ``slot_probability``: P(slot) from a choice result's log-probs, normalised over the options only (Bai et al.
  2022, arXiv 2212.08073, section 4.1), or None when nothing is readable or the engine gave a bare decision.
- ``debias``: the mean of the two orders' readings of "a is better" (Lee et al. 2023, arXiv 2309.00267,
  section 2.1.1: position bias cancels when both orders are averaged).
- ``clamp``: chain-of-thought probabilities into [0.4, 0.6] (Bai et al. 2022, section 4.1: CoT makes the
  readings overconfident, so they clamp them to 40-60%).
- ``score_expectation``: the d-RLAIF score, sum_s s * P(s) over the score tokens (Lee et al. 2023, section 2.2.2),
  with the mass of a prefix choice ("1") separated from its extensions ("10").
- ``logistic``: a score difference to p(a > b).
- ``snap``: a probability whose complement is exact, so judging (b, a) gives exactly 1 - p(a > b).
"""

from __future__ import annotations

import math

from rlaif.engines.base import ChoiceResult

COT_CLAMP = (0.4, 0.6)
TIE = 1e-9  # |p - 0.5| at or below this is a tie (float noise of an average of two exact halves)


def slot_probability(result: ChoiceResult, slot: str) -> float | None:
    """P(``slot``) normalised over the result's choices; None unless the engine returned real log-probs."""
    if not result.ok or result.method != "logprobs" or not result.readable:
        return None
    return result.probabilities().get(slot)


def structured_pick(result: ChoiceResult) -> str | None:
    """The choice a structured (no log-probs) result picked, or None when it picked none of them."""
    if not result.ok or result.method != "structured":
        return None
    picked = [c for c, lp in result.logprobs.items() if lp is not None and math.isfinite(lp)]
    return picked[0] if len(picked) == 1 else None


def snap(p: float) -> float:
    """``p`` moved by at most one ulp so that ``1 - p`` is exact, and so ``1 - (1 - p) == p``.

    For p >= 0.5, ``1 - p`` is exact already (Sterbenz). Below, q = fl(1 - p) lies in (0.5, 1], so ``1 - q`` is
    exact and is returned: its complement is q, exactly.
    """
    return p if p >= 0.5 else 1.0 - (1.0 - p)


def debias(p_first: float, p_second: float) -> float:
    """P(a better) from both orders: ``p_first`` read with a in the first slot, ``p_second`` in the second."""
    return snap((p_first + p_second) / 2)


def clamp(p: float, low: float = COT_CLAMP[0], high: float = COT_CLAMP[1]) -> float:
    return snap(min(high, max(low, p)))


def consistent(p_first: float, p_second: float) -> bool:
    """Both orders prefer the same response; a reading of exactly 0.5 prefers none, so it is never consistent."""
    return (p_first > 0.5 and p_second > 0.5) or (p_first < 0.5 and p_second < 0.5)


def exclusive_masses(probabilities: dict[str, float]) -> dict[str, float]:
    """Each choice's probability as a complete answer: a choice that is a prefix of others ("1" of "10") loses
    their mass, since P("1") read as the next token includes every continuation of "1"; longest first."""
    out: dict[str, float] = {}
    for choice in sorted(probabilities, key=len, reverse=True):
        longer = sum(out[d] for d in out if d != choice and d.startswith(choice))
        out[choice] = max(0.0, probabilities[choice] - longer)
    return out


def score_expectation(logprobs: dict[str, float | None]) -> float | None:
    """E[score] = sum_s s * P(s) over numeric choices, normalised over them; None when none is readable."""
    raw = {c: math.exp(lp) for c, lp in logprobs.items() if lp is not None and math.isfinite(lp)}
    masses = exclusive_masses(raw)
    total = math.fsum(masses.values())
    if total <= 0:
        return None
    return math.fsum(int(c) * m for c, m in masses.items()) / total


def logistic(difference: float, temperature: float) -> float:
    """p(a > b) = 1 / (1 + exp(-(s_a - s_b) / T)), computed without overflow, then snapped."""
    z = difference / temperature
    p = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
    return snap(p)


def vote(first_picked_a: bool | None, second_picked_a: bool | None) -> float | None:
    """The share of the two orders whose bare decision picked a: 0, 0.5 or 1 (a vote, not a probability)."""
    if first_picked_a is None or second_picked_a is None:
        return None
    return (int(first_picked_a) + int(second_picked_a)) / 2
