"""The arithmetic of RL on language models: each estimator and loss a small named function of tensors.

Shapes and conventions, the same for every function here:
- per-token tensors are ``[B, T]`` over the *response* tokens only, right-padded; ``mask`` is 1 on real response
  tokens (the EOS token included when the response has one) and 0 on padding. Every padded position of an output
  is 0, so sums and means over ``mask`` never see it;
- ``logp`` is log pi(y_t | x, y_<t) of the sampled token under the policy being trained, ``old_logp`` the same
  under the weights that sampled the rollout, ``ref_logp`` under the frozen reference;
- losses come back per token (``[B, T]``, unreduced); the trainer reduces them with ``masked_mean`` over the whole
  minibatch, a token-level mean as in Huang et al. 2024 ("The N+ implementation details of RLHF with PPO", arXiv
  2403.17031), cited below as *N+ details*;
- sequence-level tensors are ``[B]``; group tensors are ``[P, K]``: P prompts, K samples each.

The per-token KL estimators and the advantage estimators are chosen by name through ``KL_ESTIMATORS`` and
``GROUP_BASELINES``; the trainer's estimator table lives in ``rlaif.train.rl``.

torch is imported at the top: nothing in ``rlaif`` imports this module at module level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

# --- reductions --------------------------------------------------------------------------------------------------


def masked_sum(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum_t m_t x_t (over all elements, or along ``dim``)."""
    return (x * mask).sum() if dim is None else (x * mask).sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """sum(m x) / sum(m); a mask with no ones gives 0, not NaN."""
    return masked_sum(x, mask, dim) / mask.sum(dim=dim).clamp(min=1)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """The unbiased variance of the masked elements: sum m (x - mu)^2 / (n - 1), n = sum m (Bessel's correction).

    Fewer than two masked elements give 0 (nothing to spread), so whitening a single token leaves it centred.
    """
    mean = masked_mean(x, mask)
    n = mask.sum()
    return masked_sum((x - mean) ** 2, mask) / (n - 1).clamp(min=1)


def masked_whiten(x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """Whitening over the masked elements of the whole batch (N+ details, "advantage whitening").

    w = (x - mu) / sqrt(var + eps), mu and var over the masked elements (``masked_var``); with
    ``shift_mean=False`` the mean is added back, w = (x - mu) / sqrt(var + eps) + mu, which is how N+ details
    whiten *rewards* (a scale change that keeps their sign). Padding stays 0.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


# --- the KL penalty --------------------------------------------------------------------------------------------


def kl_k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = log pi(y_t) - log pi_ref(y_t): the plain per-token log-ratio of the sampled token.

    An unbiased estimate of KL(pi || pi_ref) whose samples can be negative (Schulman 2020, "Approximating KL
    divergence"). It is the penalty in the reward of Ziegler et al. 2019 (arXiv 1909.08593, eq. 2) and of
    N+ details: r_t = -beta * k1_t.
    """
    return logp - ref_logp


def kl_k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1, never negative (Schulman 2020).

    Unbiased for KL(pi || pi_ref) with lower variance than k1; GRPO puts it in the loss (Shao et al. 2024,
    arXiv 2402.03300, eq. 4).
    """
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


KL_ESTIMATORS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"k1": kl_k1, "k3": kl_k3}


def kl_penalised_rewards(score: Tensor, kl: Tensor, mask: Tensor, beta: float | Tensor) -> Tensor:
    """Per-token rewards of PPO for language models (Ziegler et al. 2019, eq. 2; N+ details):

    r_t = -beta * kl_t for every response token, plus the sequence's score on its last real token:
    r_T += score. ``score`` is ``[B]``, ``kl`` ``[B, T]`` (the k1 estimate, per token).
    """
    rewards = -beta * kl * mask
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last] += score * (mask.sum(dim=1) > 0)
    return rewards


def eos_penalised_score(score: Tensor, ended: Tensor, penalty: float) -> Tensor:
    """A response that never emitted EOS (cut by the token limit) loses ``penalty``: s' = s - penalty * [no EOS].

    N+ details replace the truncated response's score with a constant -1 ("EOS trick"); subtracting a constant
    instead (TRL's ``missing_eos_penalty``) keeps the ordering among truncated responses, which a reward model
    with normalised scores still carries.
    """
    return score - penalty * (~ended.bool()).to(score.dtype)


@dataclass
class AdaptiveKLController:
    """The adaptive KL coefficient of Ziegler et al. 2019 (arXiv 1909.08593, section 2.2, eq. 2 and after).

    e_t = clip((KL_t - KL_target) / KL_target, -0.2, 0.2),   beta_{t+1} = beta_t * (1 + K_beta * e_t),
    with K_beta = n_steps / horizon: the rollouts seen this update over the horizon (Ziegler et al. use
    K_beta = 0.1; their code, like N+ details, writes it as n / horizon). ``target=None`` keeps beta fixed.
    """

    beta: float
    target: float | None = 6.0
    horizon: float = 10_000.0

    def update(self, kl: float, n_steps: int) -> float:
        """Move beta after an update whose rollouts had mean sequence KL ``kl``; returns the new beta."""
        self.beta = adaptive_kl_coef(self.beta, kl, self.target, self.horizon, n_steps)
        return self.beta

    def state(self) -> dict[str, float | None]:
        return {"beta": self.beta, "target": self.target, "horizon": self.horizon}


def adaptive_kl_coef(beta: float, kl: float, target: float | None, horizon: float, n_steps: int) -> float:
    """One step of the controller above, as a pure function (``target=None``: fixed beta)."""
    if target is None:
        return beta
    error = min(max((kl - target) / target, -0.2), 0.2)
    return beta * (1.0 + error * n_steps / horizon)


# --- advantages --------------------------------------------------------------------------------------------------


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2015, arXiv 1506.02438, eqs. 11-16).

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t),   A_t = sum_l (gamma * lam)^l * delta_{t+l},
    computed backwards as A_t = delta_t + gamma * lam * A_{t+1}. The state after a response's last token is
    terminal (V = 0, A = 0). Returns (advantages, returns) with returns R_t = A_t + V(s_t), the value
    target of the clipped value loss (N+ details). Padding is 0 in both.
    """
    mask = mask.to(values.dtype)
    T = rewards.shape[1]
    advantages = torch.zeros_like(values)
    next_adv = torch.zeros_like(values[:, 0])
    for t in reversed(range(T)):
        live_next = mask[:, t + 1] if t + 1 < T else torch.zeros_like(mask[:, 0])
        next_value = values[:, t + 1] * live_next if t + 1 < T else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_adv = (delta + gamma * lam * next_adv * live_next) * mask[:, t]
        advantages[:, t] = next_adv
    return advantages, (advantages + values) * mask


def grpo_advantages(scores: Tensor, *, scale: bool = True, eps: float = 1e-4) -> Tensor:
    """Group-normalised advantages of GRPO (Shao et al. 2024, arXiv 2402.03300, section 4.1.2, outcome rewards):

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps), the same for every token of response i. ``scores`` is
    ``[P, K]``; std is the unbiased sample std over the K samples of a prompt. ``scale=False`` keeps only the
    centring (Liu et al. 2025, "Dr. GRPO", who argue the division reweights prompts by their difficulty).
    """
    centred = scores - scores.mean(dim=1, keepdim=True)
    if not scale:
        return centred
    return centred / (scores.std(dim=1, keepdim=True) + eps)


def rloo_advantages(scores: Tensor) -> Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, arXiv 2402.14740, eq. 8; Kool et al. 2019):

    A_i = r_i - 1/(K-1) * sum_{j != i} r_j, the baseline of each sample the mean of the others in its group,
    which equals K/(K-1) * (r_i - mean(r_group)). ``scores`` is ``[P, K]``, K >= 2.
    """
    k = scores.shape[1]
    if k < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got {k}")
    others = (scores.sum(dim=1, keepdim=True) - scores) / (k - 1)
    return scores - others


GROUP_BASELINES: dict[str, Callable[[Tensor], Tensor]] = {"grpo": grpo_advantages, "rloo": rloo_advantages}


# --- losses ------------------------------------------------------------------------------------------------------


def clipped_policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor,
                        clip: float) -> tuple[Tensor, Tensor]:
    """PPO's clipped surrogate (Schulman et al. 2017, arXiv 1707.06347, eq. 7), as a loss to minimise:

    rho_t = exp(log pi(y_t) - log pi_old(y_t)),
    L_t = max(-A_t * rho_t, -A_t * clip(rho_t, 1 - eps, 1 + eps)).
    Returns (per-token loss, per-token "clipped" indicator: the clipped term was the larger one).
    """
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    return torch.maximum(unclipped, clipped), (clipped > unclipped).float()


def clipped_value_loss(values: Tensor, old_values: Tensor, returns: Tensor,
                       clip: float) -> tuple[Tensor, Tensor]:
    """The clipped value loss of PPO's reference code (N+ details, "value function loss clipping"):

    V_clip = V_old + clip(V - V_old, -eps_v, eps_v),   L_t = 1/2 * max((V - R)^2, (V_clip - R)^2).
    Returns (per-token loss, per-token "clipped" indicator).
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    return 0.5 * torch.maximum(unclipped_loss, clipped_loss), (clipped_loss > unclipped_loss).float()


def entropy_from_logits(logits: Tensor) -> Tensor:
    """H = logsumexp(z) - sum_v softmax(z)_v z_v, per position, in fp32 (a diagnostic, not a loss term)."""
    logits = logits.float()
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(dim=-1)
