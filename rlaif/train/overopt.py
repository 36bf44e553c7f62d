"""The over-optimisation monitor: is the policy gaming its reward?

Optimising a proxy reward past a point lowers the true objective (Gao et al. 2023, "Scaling laws for reward model
overoptimization", arXiv 2210.10760): the proxy keeps rising while the gold score turns down, the policy drifts
from its reference (KL grows) and answers often grow longer. Here the gold stand-in is the evaluation role's AI
judge (``settings.eval``, ``--judge-model`` / ``--judge-mode``), rating each answer in the mode ``rlaif judge eval``
chose for its engine (``rlaif.train.judge_reward``). A gold stand-in that is the proxy itself (``--reward judge``
with the same engine, model and mode) could never fall while the proxy rises, so the monitor refuses it
(``refuse_self_comparison``): pick another judge, or turn the monitor's judge off.

On a fixed set of held-out prompts (the ``eval`` split, never trained on), before training, every
``monitor_every`` steps and after the last step, the monitor samples one answer per prompt (seeded the same way
each time, so measurements differ by the weights only) and records in ``overopt_records``:
- the mean sequence KL to the reference, sum_t log pi(y_t) - log pi_ref(y_t) over the answer's tokens (k1);
- the mean length and its drift, the ratio to the first measurement's;
- the proxy: the training reward's mean; the judge: its mean reward on [-1, 1] (the 1-10 score, or the PMI).

It warns when the proxy has risen while the judge has fallen: compared with the earlier record where the judge
scored best, the proxy is higher by more than ``proxy_margin`` and the judge lower by more than ``judge_margin``.
A warning is a line in the run's output and a row in ``overopt_warnings``, once per measurement.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from rlaif.errors import ConfigError
from rlaif.store import utcnow
from rlaif.train.rewards import RewardBatch, RewardSource
from rlaif.train.rl_math import kl_k1, masked_sum
from rlaif.train.rl_model import PolicyValue, reference_logps, response_batch
from rlaif.train.rollout import RolloutPrompt, sample_rollouts

if TYPE_CHECKING:
    from rlaif.store import Store
    from rlaif.train.rewards import CombinedReward

WARNING_KIND = "proxy_up_judge_down"


def refuse_self_comparison(proxy: Any, judge: Any) -> None:
    """A ConfigError when the monitor's judge is one of the proxy's own sources (the same object, or a judge of the
    same engine, model and mode): proxy and judge would move together and the warning could never fire."""
    if judge is None:
        return
    mine = getattr(judge, "identity", None)
    for source, _ in getattr(proxy, "sources", ()):
        if source is judge or (mine is not None and getattr(source, "identity", None) == mine):
            engine, model, mode = mine or ("", getattr(judge, "model", "?"), "?")
            raise ConfigError(
                f"the over-optimisation monitor's judge ({model}, {engine} engine, mode {mode}) is the reward being "
                "optimised (--reward judge): it cannot see the proxy rise while the judge falls. Give the monitor "
                "another judge (--judge-model / --judge-mode, or RLAIF_EVAL_MODEL / RLAIF_EVAL_MODE), or turn it "
                "off (--no-monitor-judge)")


@dataclass
class Measurement:
    step: int
    prompts: int
    kl: float
    mean_length: float
    length_drift: float
    proxy: float
    judge: float | None


@dataclass
class Warning_:
    step: int
    since_step: int
    proxy_delta: float
    judge_delta: float

    @property
    def message(self) -> str:
        return (f"over-optimisation at step {self.step}: the proxy reward rose by {self.proxy_delta:+.3f} while the "
                f"judge's score fell by {self.judge_delta:+.3f} since step {self.since_step}")


def divergence(history: Sequence[Measurement], now: Measurement, *, proxy_margin: float,
               judge_margin: float) -> Warning_ | None:
    """The warning rule (module docstring) against the judge's best earlier record; None when it does not fire."""
    judged = [m for m in history if m.judge is not None]
    if now.judge is None or not judged:
        return None
    best = max(judged, key=lambda m: (m.judge, -m.step))
    proxy_delta, judge_delta = now.proxy - best.proxy, now.judge - best.judge
    if proxy_delta > proxy_margin and -judge_delta > judge_margin:
        return Warning_(now.step, best.step, proxy_delta, judge_delta)
    return None


@dataclass
class Monitor:
    """Measures the policy on held-out prompts and records (and warns) in the run's tables."""

    store: Store
    run_id: str
    prompts: list[RolloutPrompt]
    proxy: CombinedReward
    judge: RewardSource | None
    tokenizer: Any
    eos_ids: Sequence[int]
    max_new_tokens: int
    temperature: float
    seed: int
    micro_batch_size: int = 8
    proxy_margin: float = 0.0
    judge_margin: float = 0.05
    log: Callable[[str], None] = print
    history: list[Measurement] = field(default_factory=list)

    def __post_init__(self) -> None:
        refuse_self_comparison(self.proxy, self.judge)

    def load_history(self) -> None:
        """The records of this run so far (a resumed run compares with what came before the kill)."""
        rows = self.store.fetch("SELECT step, prompts, kl, mean_length, length_drift, proxy_score, judge_score "
                                "FROM overopt_records WHERE run_id = ? ORDER BY step", [self.run_id])
        self.history = [Measurement(r["step"], r["prompts"], r["kl"], r["mean_length"], r["length_drift"],
                                    r["proxy_score"], r["judge_score"]) for r in rows]

    def measure(self, step: int, policy: PolicyValue, reference: Any) -> Measurement | None:
        if not self.prompts:
            return None
        rollouts = sample_rollouts(policy.lm, self.tokenizer, self.prompts, k=1, max_new_tokens=self.max_new_tokens,
                                   temperature=self.temperature, eos_ids=self.eos_ids, seed=self.seed,
                                   batch_size=self.micro_batch_size)
        kl = _sequence_kl(policy, reference, rollouts, self.tokenizer.pad_token_id, self.temperature,
                          self.micro_batch_size)
        batch = RewardBatch([p.messages for p in self.prompts], rollouts.texts, [p.prompt_id for p in self.prompts],
                            rollouts.ended)
        proxy = sum(self.proxy.score(batch).total) / len(batch)
        judge = _mean(self.judge.score(batch).values) if self.judge is not None else None
        length = rollouts.tokens / len(rollouts)
        first = self.history[0].mean_length if self.history else length
        now = Measurement(step, len(batch), kl, length, length / first if first else 1.0, proxy, judge)
        self._record(now)
        return now

    def _record(self, now: Measurement) -> None:
        warning = divergence(self.history, now, proxy_margin=self.proxy_margin, judge_margin=self.judge_margin)
        self.history.append(now)
        created = utcnow()
        judge_model = getattr(self.judge, "model", None) or getattr(self.judge, "source", None)
        batches: dict[str, list[dict]] = {"overopt_records": [{
            "run_id": self.run_id, "step": now.step, "prompts": now.prompts, "kl": now.kl,
            "mean_length": now.mean_length, "length_drift": now.length_drift, "proxy_score": now.proxy,
            "judge_score": now.judge, "proxy_source": self.proxy.source, "judge_model": judge_model,
            "judge_mode": getattr(self.judge, "mode", None), "created_at": created}]}
        judged = f", judge {now.judge:.3f}" if now.judge is not None else ""
        self.log(f"monitor @ step {now.step}: kl {now.kl:.3f}, length {now.mean_length:.1f} "
                 f"(x{now.length_drift:.2f}), proxy {now.proxy:.3f}{judged}")
        if warning is not None:
            batches["overopt_warnings"] = [{
                "run_id": self.run_id, "step": now.step, "kind": WARNING_KIND, "since_step": warning.since_step,
                "proxy_delta": warning.proxy_delta, "judge_delta": warning.judge_delta,
                "message": warning.message, "created_at": created}]
            self.log(f"WARNING: {warning.message}")
        self.store.write(batches)


def _mean(values: Sequence[float | None]) -> float | None:
    given = [v for v in values if v is not None]
    return sum(given) / len(given) if given else None


@torch.no_grad()
def _sequence_kl(policy: PolicyValue, reference: Any, rollouts: Any, pad: int, temperature: float,
                 micro: int) -> float:
    total, n = 0.0, len(rollouts)
    device = next(policy.parameters()).device
    for start in range(0, n, micro):
        queries = [rollouts.prompt_of(i).ids for i in range(start, min(n, start + micro))]
        batch = response_batch(queries, rollouts.responses[start : start + micro], pad).to(device)
        logp = policy(batch, temperature).logp
        ref = reference_logps(reference, batch, temperature)
        total += float(masked_sum(kl_k1(logp, ref), batch.mask))
    return total / max(1, n)
