"""Win-rate statistics: the win rate with its 95% interval, and the length-controlled win rate.

Input per evaluated prompt: p_i, the judge's debiased probability that the policy's answer beats the base's
(the mean of both orders), and the two answers' lengths in characters.

- **Win rate** = mean p_i: the soft win rate, as AlpacaEval 2 averages its judge's preference probabilities.
  The 95% interval is the normal approximation mean +- 1.96 s / sqrt(n) (s the sample std of p_i), clipped to
  [0, 1]; with fewer than two prompts it is [0, 1].
- **Length-controlled win rate** (Dubois et al. 2024, arXiv 2404.04475). Their GLM predicts the judge's
  preference from a model term, a length term and an instruction-difficulty term, and the LC win rate is the
  prediction with the length difference set to zero. With one policy against one base there is no cross-model
  difficulty to estimate, so the fitted form here is

      logit P(policy better | i) = a + b * tanh((len_policy_i - len_base_i) / s)

  with s the (population) standard deviation of the length differences, fitted by maximum likelihood to the soft
  targets p_i (Newton's method on the Bernoulli log-likelihood with fractional outcomes, no regularisation, the
  coefficients bounded at +-50). LC win rate = sigmoid(a), the prediction at zero length difference. When all
  length differences are equal (s = 0) there is no length term, and a = logit(mean p), so LC = the win rate.
  Swapping policy and base gives exactly 1 - LC. Its 95% interval is a percentile bootstrap over prompts
  (``BOOTSTRAP_SAMPLES`` resamples, seeded).

Only numpy; no torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlaif.judge.metrics import Z95

BOOTSTRAP_SAMPLES = 1000
BOUND = 50.0
TIE = 1e-9


@dataclass(frozen=True)
class LengthFit:
    intercept: float  # a
    length_coef: float  # b
    scale: float  # s, characters; 0 = no length term

    @property
    def lc_win_rate(self) -> float:
        return 1.0 / (1.0 + math.exp(-self.intercept))


@dataclass(frozen=True)
class WinRateStats:
    prompts: int
    win_rate: float
    win_rate_low: float
    win_rate_high: float
    lc_win_rate: float
    lc_win_rate_low: float
    lc_win_rate_high: float
    fit: LengthFit
    wins: int
    ties: int
    losses: int
    mean_len_policy: float
    mean_len_base: float


def win_rate_interval(p: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high): the soft win rate and its normal-approximation 95% interval, clipped to [0, 1]."""
    values = np.asarray(p, dtype=float)
    mean = float(values.mean())
    if len(values) < 2:
        return mean, 0.0, 1.0
    half = Z95 * float(values.std(ddof=1)) / math.sqrt(len(values))
    return mean, max(0.0, mean - half), min(1.0, mean + half)


def fit_length_glm(p: Sequence[float], len_policy: Sequence[float], len_base: Sequence[float],
                   iterations: int = 100) -> LengthFit:
    """Maximum-likelihood (a, b) of logit P = a + b tanh(d / s); see the module docstring."""
    target = np.asarray(p, dtype=float)
    diff = np.asarray(len_policy, dtype=float) - np.asarray(len_base, dtype=float)
    scale = float(diff.std()) if len(diff) > 1 else 0.0
    if scale == 0.0:
        mean = min(max(float(target.mean()), 1e-12), 1 - 1e-12)
        return LengthFit(float(np.clip(math.log(mean / (1 - mean)), -BOUND, BOUND)), 0.0, 0.0)
    x = np.stack([np.ones_like(diff), np.tanh(diff / scale)], axis=1)
    beta = np.zeros(2)
    for _ in range(iterations):
        mu = 1.0 / (1.0 + np.exp(-(x @ beta)))
        gradient = x.T @ (target - mu)
        hessian = (x * (mu * (1 - mu))[:, None]).T @ x + 1e-12 * np.eye(2)
        step = np.linalg.solve(hessian, gradient)
        beta = np.clip(beta + step, -BOUND, BOUND)
        if np.max(np.abs(step)) < 1e-12:
            break
    return LengthFit(float(beta[0]), float(beta[1]), scale)


def bootstrap_lc(p: Sequence[float], len_policy: Sequence[float], len_base: Sequence[float], *, seed: int,
                 samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """The 2.5th and 97.5th percentiles of the LC win rate over prompt resamples."""
    n = len(p)
    if n < 2:
        return 0.0, 1.0
    rng = np.random.default_rng(seed)
    arrays = [np.asarray(v, dtype=float) for v in (p, len_policy, len_base)]
    values = []
    for _ in range(samples):
        pick = rng.integers(0, n, size=n)
        values.append(fit_length_glm(*(a[pick] for a in arrays)).lc_win_rate)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def summarise(p: Sequence[float], len_policy: Sequence[int], len_base: Sequence[int], *, seed: int = 0,
              samples: int = BOOTSTRAP_SAMPLES) -> WinRateStats:
    """Every figure of a win-rate evaluation from its per-prompt preferences and lengths."""
    if not p:
        raise ValueError("no judged prompts")
    mean, low, high = win_rate_interval(p)
    fit = fit_length_glm(p, len_policy, len_base)
    lc_low, lc_high = bootstrap_lc(p, len_policy, len_base, seed=seed, samples=samples)
    ties = int(sum(abs(x - 0.5) <= TIE for x in p))
    wins = int(sum(x > 0.5 + TIE for x in p))
    return WinRateStats(len(p), mean, low, high, fit.lc_win_rate, lc_low, lc_high, fit, wins, ties,
                        len(p) - wins - ties, float(np.mean(len_policy)), float(np.mean(len_base)))
