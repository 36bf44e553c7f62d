"""One RL update from one batch of scored rollouts: the two advantage estimators and the optimisation epochs.

``ESTIMATORS`` is the table the trainer chooses from (STYLE.md habit 9):

- **ppo** (Schulman et al. 2017, arXiv 1707.06347, as N+ details (Huang et al. 2024, arXiv 2403.17031) apply it
  to language models): per-token rewards r_t = -beta * k1_t plus the (EOS-penalised) score on the last token
  (Ziegler et al. 2019, arXiv 1909.08593, eq. 2), beta moved by the adaptive controller; GAE over a value head
  (Schulman et al. 2015); advantages whitened over the batch; the clipped policy loss and the clipped value loss.
- **grpo** (Shao et al. 2024, arXiv 2402.03300, eq. 3): K samples per prompt, each sample's advantage its score
  normalised by its group's mean and std, the same on all its tokens; no value model; the KL to the reference
  enters the *loss* as beta * k3 per token instead of the reward.
- **rloo** (Ahmadian et al. 2024, arXiv 2402.14740): K samples per prompt, the baseline of each the mean score
  of the other K-1; the sequence KL (sum of k1) is subtracted from the score, as in their eq. 8's reward.

Both group-relative estimators reuse PPO's clipped ratio, so several epochs over one batch stay near the policy
that sampled it; with one epoch and one minibatch the ratio is 1 and the loss is the plain policy gradient.

On several processes (``Shard``) every process holds the whole batch and its prepared tensors, takes every
``world``-th row of each minibatch, and scales its loss by ``world`` over the minibatch's *global* token count;
DDP averages the gradients, so each step is the one-process step up to the order of float sums.

Changed from the papers: every loss is a token-level mean over the minibatch (N+ details' reduction; DAPO and
Dr. GRPO argue GRPO's per-sequence mean favours short answers); GRPO's KL coefficient may be adaptive too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from rlaif.train import rl_math as M
from rlaif.train.rl_model import PolicyValue, ResponseBatch, reference_logps, response_batch
from rlaif.train.rollout import Rollouts


@dataclass(frozen=True)
class UpdateConfig:
    """The numbers one update needs (the trainer fills it from its options)."""

    estimator: str
    temperature: float
    epochs: int
    minibatches: int
    micro_batch_size: int
    clip: float
    vf_clip: float
    vf_coef: float
    gamma: float
    lam: float
    whiten: bool
    eos_penalty: float
    max_grad_norm: float


def _no_reduce(stats: dict[str, float]) -> dict[str, float]:
    return stats


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` (one process: rank 0 of 1, nothing to synchronise)."""

    rank: int = 0
    world: int = 1
    no_sync: Callable[[], Any] = contextlib.nullcontext  # DDP's no_sync: skip the all-reduce of a micro-batch
    reduce: Callable[[dict[str, float]], dict[str, float]] = field(default=_no_reduce)  # sums over processes


@dataclass
class Prepared:
    """What an update reads, computed once per batch without gradients."""

    batch: ResponseBatch
    old_logp: torch.Tensor  # [B, T]
    ref_logp: torch.Tensor  # [B, T]
    old_values: torch.Tensor | None  # [B, T]
    advantages: torch.Tensor  # [B, T]
    returns: torch.Tensor | None  # [B, T]
    scores: torch.Tensor  # [B] the combined reward
    penalised: torch.Tensor  # [B] after the no-EOS penalty
    seq_kl: torch.Tensor  # [B] sum of k1(old, ref) over the response
    entropy: torch.Tensor  # [B, T]
    seq_advantage: torch.Tensor  # [B] for the rollout rows


AdvantageFn = Callable[[torch.Tensor, torch.Tensor, "Prepared", UpdateConfig, float, int], tuple]


def ppo_advantages(penalised: torch.Tensor, kl: torch.Tensor, prep: Prepared, cfg: UpdateConfig,
                   beta: float, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per-token KL-penalised rewards -> GAE over the old values -> whitened advantages; returns (A, R)."""
    mask = prep.batch.mask
    rewards = M.kl_penalised_rewards(penalised, kl, mask, beta)
    advantages, returns = M.gae(rewards, prep.old_values, mask, cfg.gamma, cfg.lam)
    if cfg.whiten:
        advantages = M.masked_whiten(advantages, mask)
    return advantages, returns


def grpo_token_advantages(penalised: torch.Tensor, kl: torch.Tensor, prep: Prepared, cfg: UpdateConfig,
                          beta: float, k: int) -> tuple[torch.Tensor, None]:
    """GRPO: (r - mean_group) / std_group on every token of the sample (the KL goes in the loss)."""
    seq = M.grpo_advantages(penalised.view(-1, k)).reshape(-1)
    return seq[:, None] * prep.batch.mask, None


def rloo_token_advantages(penalised: torch.Tensor, kl: torch.Tensor, prep: Prepared, cfg: UpdateConfig,
                          beta: float, k: int) -> tuple[torch.Tensor, None]:
    """RLOO: the KL-penalised score minus the mean of the others in the group, on every token of the sample."""
    reward = penalised - beta * M.masked_sum(kl, prep.batch.mask, dim=1)
    seq = M.rloo_advantages(reward.view(-1, k)).reshape(-1)
    return seq[:, None] * prep.batch.mask, None


@dataclass(frozen=True)
class Estimator:
    """An entry of ``ESTIMATORS``: how advantages are made and where the KL penalty goes."""

    advantages: AdvantageFn
    value_head: bool
    kl_in: Literal["reward", "loss"]
    kl_estimator: str  # the per-token estimator of the penalty: 'k1' in a reward, 'k3' in a loss
    group: bool  # needs K >= 2 samples per prompt


ESTIMATORS: dict[str, Estimator] = {
    "ppo": Estimator(ppo_advantages, value_head=True, kl_in="reward", kl_estimator="k1", group=False),
    "grpo": Estimator(grpo_token_advantages, value_head=False, kl_in="loss", kl_estimator="k3", group=True),
    "rloo": Estimator(rloo_token_advantages, value_head=False, kl_in="reward", kl_estimator="k1", group=True),
}


@torch.no_grad()
def prepare(policy: PolicyValue, reference: Any, rollouts: Rollouts, scores: list[float], cfg: UpdateConfig,
            beta: float, pad: int, device: torch.device) -> Prepared:
    """Old log-probs, values, reference log-probs, penalties and advantages of one rollout batch."""
    queries = [rollouts.prompt_of(i).ids for i in range(len(rollouts))]
    batch = response_batch(queries, rollouts.responses, pad).to(device)
    outs = [_forward(policy, part, cfg.temperature) for part in _micro(batch, cfg.micro_batch_size)]
    old_logp = torch.cat([o.logp for o in outs])
    entropy = torch.cat([o.entropy for o in outs])
    old_values = torch.cat([o.values for o in outs]) if outs[0].values is not None else None
    ref_logp = torch.cat([reference_logps(reference, part, cfg.temperature)
                          for part in _micro(batch, cfg.micro_batch_size)])
    score = torch.tensor(scores, dtype=torch.float32, device=device)
    ended = torch.tensor(rollouts.ended, device=device)
    penalised = M.eos_penalised_score(score, ended, cfg.eos_penalty)
    kl = M.kl_k1(old_logp, ref_logp) * batch.mask
    prep = Prepared(batch, old_logp, ref_logp, old_values, torch.empty(0), None, score, penalised,
                    M.masked_sum(kl, batch.mask, dim=1), entropy, torch.empty(0))
    prep.advantages, prep.returns = ESTIMATORS[cfg.estimator].advantages(penalised, kl, prep, cfg, beta, rollouts.k)
    prep.seq_advantage = M.masked_mean(prep.advantages, batch.mask, dim=1)
    return prep


def optimise(policy: PolicyValue, optimizer: Any, prep: Prepared, cfg: UpdateConfig, beta: float,
             generator: torch.Generator, backward: Callable[[torch.Tensor], None] | None = None,
             shard: Shard | None = None) -> dict[str, float]:
    """``cfg.epochs`` passes over the batch in ``cfg.minibatches`` shuffled minibatches, one optimizer step each."""
    backward = backward or (lambda loss: loss.backward())
    shard = shard or Shard()
    n = prep.batch.mask.shape[0]
    size = max(1, n // cfg.minibatches)
    sums: dict[str, float] = {}
    updates = 0
    for _ in range(cfg.epochs):
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n - size + 1, size):
            stats = _minibatch(policy, optimizer, prep, order[start : start + size], cfg, beta, backward, shard)
            for name, value in stats.items():
                sums[name] = sums.get(name, 0.0) + value
            updates += 1
    return {name: value / max(1, updates) for name, value in sums.items()}


def _minibatch(policy: PolicyValue, optimizer: Any, prep: Prepared, rows: list[int], cfg: UpdateConfig,
               beta: float, backward: Callable[[torch.Tensor], None], shard: Shard) -> dict[str, float]:
    """One optimizer step over ``rows``, in micro-batches whose losses add up to the minibatch's token mean.

    ``rows`` is the global minibatch; this process takes its share (``Shard``), normalised by the global tokens.
    """
    tokens = float(prep.batch.mask[rows].sum().clamp(min=1))
    mine = rows[shard.rank :: shard.world]
    parts = [mine[i : i + cfg.micro_batch_size] for i in range(0, len(mine), cfg.micro_batch_size)]
    totals: dict[str, float] = {}  # the statistics this estimator has (no value loss without a value head)
    for k, part in enumerate(parts):
        # DDP all-reduces once per step, after the last micro-batch; no_sync must cover the forward pass too
        with contextlib.nullcontext() if k == len(parts) - 1 else shard.no_sync():
            loss, stats = _micro_loss(policy, prep, part, cfg, beta)
            backward(loss * shard.world / tokens)  # DDP averages over the processes; the world undoes that
        for name, value in stats.items():
            totals[name] = totals.get(name, 0.0) + float(value.detach()) / tokens
    totals = shard.reduce(totals)
    params = [p for p in policy.parameters() if p.requires_grad]
    limit = cfg.max_grad_norm if cfg.max_grad_norm > 0 else float("inf")
    totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, limit))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return totals


def _micro_loss(policy: PolicyValue, prep: Prepared, part: list[int], cfg: UpdateConfig,
                beta: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The summed (not yet averaged) loss of rows ``part`` and its statistics."""
    estimator = ESTIMATORS[cfg.estimator]
    idx = torch.tensor(part, device=prep.batch.mask.device)
    mask = prep.batch.mask[idx]
    out = _forward(policy, _select(prep.batch, idx), cfg.temperature)
    pg, clipped = M.clipped_policy_loss(out.logp, prep.old_logp[idx], prep.advantages[idx], cfg.clip)
    loss = M.masked_sum(pg, mask)
    log_ratio = out.logp - prep.old_logp[idx]
    stats = {"policy_loss": loss, "clip_frac": M.masked_sum(clipped, mask),
             "approx_kl": M.masked_sum(torch.exp(log_ratio) - 1 - log_ratio, mask)}  # k3 of old vs new
    if estimator.value_head:
        vf, vclipped = M.clipped_value_loss(out.values, prep.old_values[idx], prep.returns[idx], cfg.vf_clip)
        stats["value_loss"] = M.masked_sum(vf, mask)
        stats["vf_clip_frac"] = M.masked_sum(vclipped, mask)
        loss = loss + cfg.vf_coef * stats["value_loss"]
    if estimator.kl_in == "loss":
        kl = M.KL_ESTIMATORS[estimator.kl_estimator](out.logp, prep.ref_logp[idx])
        stats["kl_loss"] = M.masked_sum(kl, mask)
        loss = loss + beta * stats["kl_loss"]
    return loss, stats


def _forward(policy: PolicyValue, batch: ResponseBatch, temperature: float):
    return policy(batch, temperature)


def _micro(batch: ResponseBatch, size: int) -> list[ResponseBatch]:
    n = batch.mask.shape[0]
    return [_select(batch, torch.arange(i, min(n, i + size), device=batch.mask.device)) for i in range(0, n, size)]


def _select(batch: ResponseBatch, idx: torch.Tensor) -> ResponseBatch:
    """Rows ``idx`` of a batch, trimmed to their own longest sequence and response."""
    attention = batch.attention[idx]
    mask = batch.mask[idx]
    width = int(attention.sum(dim=1).max())
    resp = max(1, int(mask.sum(dim=1).max()))
    return ResponseBatch(batch.ids[idx, :width], attention[:, :width], batch.positions[idx, :resp],
                         batch.targets[idx, :resp], mask[:, :resp])


def step_metrics(prep: Prepared, rollouts: Rollouts, update: dict[str, float], beta: float) -> dict[str, float]:
    """What a step logs besides the losses: rewards, KL, entropy, lengths, EOS rate, advantages, values."""
    mask = prep.batch.mask
    lengths = mask.sum(dim=1)
    out = {
        "reward": float(prep.scores.mean()), "reward_std": float(prep.scores.std()) if len(prep.scores) > 1 else 0.0,
        "reward_penalised": float(prep.penalised.mean()), "kl": float(prep.seq_kl.mean()), "kl_coef": beta,
        "entropy": float(M.masked_mean(prep.entropy, mask)), "response_length": float(lengths.float().mean()),
        "eos_rate": sum(rollouts.ended) / max(1, len(rollouts)),
        "advantage_mean": float(M.masked_mean(prep.advantages, mask)),
        "advantage_std": float(M.masked_var(prep.advantages, mask).sqrt()),
        "rollout_tokens": float(rollouts.tokens), "rollout_s": rollouts.seconds,
    }
    if prep.returns is not None:
        out["return_mean"] = float(M.masked_mean(prep.returns, mask))
        out["value_mean"] = float(M.masked_mean(prep.old_values, mask))
    out.update(update)
    return out
