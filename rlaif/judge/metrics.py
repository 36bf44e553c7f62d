"""Judge evaluation metrics against labelled pairs, each with a 95% interval; pure functions of numbers.

Per pair the eval knows, in the file's slot order: whether ``response_a`` is the labelled better (``label_a``),
the judge's P(response_a better) over both orders (``p``), the same read from each single order (``p_first``:
response_a shown in slot (A); ``p_second``: in slot (B)), a vote for engines without log-probs, and both lengths.

- Agreement: 1 when the judge prefers the labelled response, 0 when it prefers the other, 0.5 for a tie (a
  coin flip's worth); debiased (``p``) and for each single order, so the gain from averaging both orders shows.
- Position consistency: both single orders prefer the same response (a reading of exactly 0.5 prefers none).
  First-slot rate: the share of single-order readings that prefer whatever sits in slot (A).
- Calibration: Brier score, mean (p - y)^2; ECE over 10 equal-width bins of p on [0, 1], the bin-weighted
  |mean(y) - mean(p)|.
- Baselines that cannot read, beside every mode: "always the longer" / "always the shorter" (in characters),
  "word overlap" (the fake engine's score rule: the response whose words the conversation contains more often
  per word, ``rlaif.engines.fake.overlap_score``) and "slot (A)" (always the file's ``response_a``); a tie
  counts 0.5. Agreement split by whether the labelled response is the longer one (length bias).
- Per ``kind`` of pair: agreement and every baseline (``by_kind``). A judge carries measured signal when the
  lower bound of its agreement beats the best baseline (``signal``).

Intervals: Wilson score intervals for the proportions (ties add 0.5 to the count); a percentile bootstrap
(1,000 resamples of the pairs, seed 0) for Brier and ECE.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rlaif.judge.arithmetic import consistent as both_agree

Z95 = 1.959963984540054
ECE_BINS = 10
BOOTSTRAP = 1000
TIE = 1e-9


@dataclass(frozen=True)
class EvalRecord:
    label_a: bool
    p: float | None = None
    p_first: float | None = None
    p_second: float | None = None
    vote: float | None = None
    len_a: int = 0
    len_b: int = 0
    overlap_a: float | None = None  # the fake engine's overlap score of each response given the conversation
    overlap_b: float | None = None
    kind: str | None = None

    @property
    def decision(self) -> float | None:
        return self.p if self.p is not None else self.vote


@dataclass(frozen=True)
class Metric:
    value: float | None
    lo: float | None
    hi: float | None
    n: int


NONE = Metric(None, None, None, 0)


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n``."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def proportion(values: Sequence[float]) -> Metric:
    """Mean of 0/0.5/1 outcomes with its Wilson interval."""
    if not values:
        return NONE
    lo, hi = wilson(math.fsum(values), len(values))
    return Metric(math.fsum(values) / len(values), lo, hi, len(values))


def correct(d: float, label_a: bool) -> float:
    """1 if ``d`` (P(a better)) prefers the labelled response, 0 if the other, 0.5 for a tie."""
    if abs(d - 0.5) <= TIE:
        return 0.5
    return 1.0 if (d > 0.5) == label_a else 0.0


def brier(ps: Sequence[float], ys: Sequence[bool]) -> float:
    return math.fsum((p - float(y)) ** 2 for p, y in zip(ps, ys)) / len(ps)


def ece(ps: Sequence[float], ys: Sequence[bool], bins: int = ECE_BINS) -> float:
    """Expected calibration error over ``bins`` equal-width bins of p on [0, 1] (1.0 falls in the last bin)."""
    groups: dict[int, list[tuple[float, bool]]] = {}
    for p, y in zip(ps, ys):
        groups.setdefault(min(int(p * bins), bins - 1), []).append((p, y))
    total = 0.0
    for members in groups.values():
        mean_p = math.fsum(p for p, _ in members) / len(members)
        mean_y = sum(y for _, y in members) / len(members)
        total += len(members) / len(ps) * abs(mean_y - mean_p)
    return total


def bootstrapped(stat: Callable[[Sequence[float], Sequence[bool]], float], ps: Sequence[float],
                 ys: Sequence[bool], resamples: int = BOOTSTRAP, seed: int = 0) -> Metric:
    """``stat`` with a percentile bootstrap 95% interval over the pairs."""
    if not ps:
        return NONE
    rng = random.Random(seed)
    n = len(ps)
    draws = []
    for _ in range(resamples):
        idx = [rng.randrange(n) for _ in range(n)]
        draws.append(stat([ps[i] for i in idx], [ys[i] for i in idx]))
    draws.sort()
    lo, hi = draws[int(0.025 * resamples)], draws[min(resamples - 1, int(0.975 * resamples))]
    return Metric(stat(ps, ys), lo, hi, n)


def _longer(r: EvalRecord) -> float:
    """1 when the labelled response is the longer one, 0 when it is the shorter, 0.5 when both are as long."""
    labelled, other = (r.len_a, r.len_b) if r.label_a else (r.len_b, r.len_a)
    return 0.5 if labelled == other else float(labelled > other)


def _overlap(r: EvalRecord) -> float:
    """1 when the word-overlap rule prefers the labelled response, 0 the other, 0.5 on a tie (or no scores)."""
    if r.overlap_a is None or r.overlap_b is None or abs(r.overlap_a - r.overlap_b) <= TIE:
        return 0.5
    return float((r.overlap_a > r.overlap_b) == r.label_a)


BASELINES: dict[str, Callable[[EvalRecord], float]] = {
    "longer": _longer,
    "shorter": lambda r: 1.0 - _longer(r),
    "overlap": _overlap,
    "slot_a": lambda r: float(r.label_a),
}


def baselines(records: Sequence[EvalRecord]) -> dict[str, Metric]:
    """Agreement of each baseline that cannot read, with its Wilson interval."""
    return {name: proportion([rule(r) for r in records]) for name, rule in BASELINES.items()}


def best_baseline(metrics: dict[str, Metric]) -> tuple[str, float]:
    """The baseline with the highest agreement, and that agreement."""
    name = max(BASELINES, key=lambda b: metrics[b].value if metrics[b].value is not None else -1.0)
    return name, metrics[name].value or 0.0


def signal(metrics: dict[str, Metric]) -> bool:
    """Whether the judge's agreement is measured above every baseline: its 95% lower bound beats the best one."""
    lo = metrics["agreement"].lo
    return lo is not None and not math.isnan(lo) and lo > best_baseline(metrics)[1]


def by_kind(records: Sequence[EvalRecord]) -> dict[str, dict[str, Metric]]:
    """Per ``kind`` (records without one are "all" only): the judge's agreement and every baseline."""
    kinds = sorted({r.kind for r in records if r.kind is not None})
    out = {}
    for kind in kinds:
        members = [r for r in records if r.kind == kind]
        out[kind] = {"agreement": proportion(_outcomes(members, lambda r: r.decision)), **baselines(members)}
    return out


def first_slot(r: EvalRecord) -> list[float]:
    """Per single order, 1 if the reading preferred slot (A), 0 if slot (B), 0.5 if neither."""
    return [correct(r.p_first, True), correct(r.p_second, False)]  # type: ignore[arg-type]


def _outcomes(records: Sequence[EvalRecord], value: Callable[[EvalRecord], float | None]) -> list[float]:
    """``correct`` of each record's ``value`` (records without one are left out)."""
    return [correct(v, r.label_a) for r in records if (v := value(r)) is not None]


def evaluate(records: Sequence[EvalRecord]) -> dict[str, Metric]:
    """Every metric of the module docstring, by the column names of the ``judge_evals`` table."""
    ordered = [r for r in records if r.p_first is not None and r.p_second is not None]
    with_p = [r for r in records if r.p is not None]
    ps, ys = [r.p for r in with_p if r.p is not None], [r.label_a for r in with_p]
    decided = [r for r in records if r.decision is not None]
    return {
        "agreement": proportion(_outcomes(records, lambda r: r.decision)),
        "agreement_first": proportion(_outcomes(ordered, lambda r: r.p_first)),
        "agreement_second": proportion(_outcomes(ordered, lambda r: r.p_second)),
        "consistency": proportion([float(both_agree(r.p_first, r.p_second)) for r in ordered  # type: ignore[arg-type]
                                   ]),
        "first_slot_rate": proportion([v for r in ordered for v in first_slot(r)]),
        "brier": bootstrapped(brier, ps, ys),
        "ece": bootstrapped(ece, ps, ys),
        **baselines(records),
        "when_label_longer": proportion(_outcomes([r for r in decided if _longer(r) == 1.0], lambda r: r.decision)),
        "when_label_shorter": proportion(_outcomes([r for r in decided if _longer(r) == 0.0], lambda r: r.decision)),
    }
