"""Training losses: each a small named function of tensors, its paper's equation in the docstring.

Conventions, the same for every function here:
- a function returns one loss per example (shape ``[B]``), unreduced. The training loop sums them and divides by
  the size of the whole global batch, so the gradient is the same on one process as on N (see ``rlaif.train.loop``);
- log-probs are sums over a completion's tokens, ``log pi(y|x) = sum_t log pi(y_t | x, y_<t)``; ``tokens`` are
  the completion lengths |y| that the length-normalised losses divide by;
- ``p_chosen`` is the judge's debiased probability that the chosen answer is better (a soft label in [0.5, 1]).

The preference losses are chosen by name through ``PAIR_LOSSES``, each entry saying whether it needs reference
log-probs and what its default beta is, instead of one long branching method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor


def nll_loss(token_logps: Tensor, mask: Tensor) -> Tensor:
    """Supervised fine-tuning: the negative log-likelihood of the target tokens, per sequence.

    L(x, y) = - sum_t m_t log pi(y_t | x, y_<t), where the mask m covers the assistant tokens only.
    Returned per sequence as a sum, so the loop can divide by the global batch's token count (a token-level mean,
    as in Ouyang et al. 2022's SFT and Bai et al. 2022's SL-CAI).
    """
    return -(token_logps * mask).sum(dim=-1)


def bradley_terry_loss(reward_chosen: Tensor, reward_rejected: Tensor, p_chosen: Tensor) -> Tensor:
    """Reward model: Bradley-Terry (1952) with soft labels, the cross-entropy to the judge's ``p_chosen``.

    P(chosen > rejected) = sigmoid(r_c - r_r), as in the preference models of Ouyang et al. 2022 (eq. 1) and
    Bai et al. 2022; with a soft target p the loss is
    L = -[p log sigmoid(r_c - r_r) + (1 - p) log sigmoid(r_r - r_c)],
    which is the usual -log sigmoid(r_c - r_r) when p = 1.
    """
    import torch.nn.functional as F

    delta = reward_chosen - reward_rejected
    return -(p_chosen * F.logsigmoid(delta) + (1 - p_chosen) * F.logsigmoid(-delta))


def dpo_sigmoid_loss(logits: Tensor, beta: float) -> Tensor:
    """DPO (Rafailov et al. 2023, arXiv 2305.18290, eq. 7): L = -log sigmoid(beta * h).

    h = [log pi(y_w|x) - log pi_ref(y_w|x)] - [log pi(y_l|x) - log pi_ref(y_l|x)] (``dpo_logits``).
    """
    import torch.nn.functional as F

    return -F.logsigmoid(beta * logits)


def cdpo_loss(logits: Tensor, p_chosen: Tensor, beta: float) -> Tensor:
    """Conservative DPO with a soft label per row: the DPO logit under a cross-entropy to ``p_chosen``.

    Mitchell 2023 ("A note on DPO with noisy preferences", cDPO) assumes labels flipped with probability eps:
    L = -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h). Here eps is per row, eps_i = 1 - p_chosen_i,
    the judge's own uncertainty, which is Bradley-Terry's soft-label cross-entropy on DPO's implicit reward.
    """
    import torch.nn.functional as F

    return -(p_chosen * F.logsigmoid(beta * logits) + (1 - p_chosen) * F.logsigmoid(-beta * logits))


def ipo_loss(logits: Tensor, beta: float) -> Tensor:
    """IPO (Azar et al. 2023, arXiv 2310.12036, eq. 17): L = (h - 1 / (2 tau))^2, with tau = beta.

    h is the same log-ratio difference as DPO's, on sequence log-probs as in the paper's equation. The square
    regresses h to a fixed target instead of pushing it to infinity, so IPO does not overfit deterministic labels.
    """
    return (logits - 1.0 / (2.0 * beta)) ** 2


def simpo_loss(avg_chosen: Tensor, avg_rejected: Tensor, beta: float, gamma: float) -> Tensor:
    """SimPO (Meng et al. 2024, arXiv 2405.14734, eq. 6): no reference model, length-normalised, a target margin.

    L = -log sigmoid(beta/|y_w| log pi(y_w|x) - beta/|y_l| log pi(y_l|x) - gamma); ``avg_*`` are the per-token
    mean log-probs log pi(y|x) / |y|.
    """
    import torch.nn.functional as F

    return -F.logsigmoid(beta * (avg_chosen - avg_rejected) - gamma)


@dataclass
class PairLogps:
    """The tensors a preference loss reads, one entry per pair (shape ``[B]``)."""

    chosen: Tensor  # log pi(y_w|x), summed over the completion
    rejected: Tensor
    chosen_tokens: Tensor  # |y_w|
    rejected_tokens: Tensor
    p_chosen: Tensor
    ref_chosen: Tensor | None = None  # log pi_ref(y_w|x); None for the losses that use no reference
    ref_rejected: Tensor | None = None


def dpo_logits(x: PairLogps) -> Tensor:
    """h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))."""
    return (x.chosen - x.ref_chosen) - (x.rejected - x.ref_rejected)


def normalised_dpo_logits(x: PairLogps) -> Tensor:
    """h divided per answer by its length: (log pi(y_w) - log pi_ref(y_w)) / |y_w| - (same for y_l) / |y_l|.

    Length-normalised DPO (the "DPO w/ length normalisation" of Meng et al. 2024, section 3; also R-DPO's concern,
    Park et al. 2024): the implicit reward is per token, so a longer answer earns no more reward for its length.
    """
    return (x.chosen - x.ref_chosen) / x.chosen_tokens - (x.rejected - x.ref_rejected) / x.rejected_tokens


@dataclass(frozen=True)
class PairLoss:
    """One preference loss: how to compute it from ``PairLogps``, and what it needs."""

    compute: Callable[[PairLogps, float, float], Tensor]  # (pairs, beta, gamma) -> per-pair loss
    uses_reference: bool
    length_normalised: bool  # its implicit reward is per token (for the logged reward metrics)


PAIR_LOSSES: dict[str, PairLoss] = {
    "dpo": PairLoss(lambda x, beta, gamma: dpo_sigmoid_loss(dpo_logits(x), beta), True, False),
    "cdpo": PairLoss(lambda x, beta, gamma: cdpo_loss(dpo_logits(x), x.p_chosen, beta), True, False),
    "ipo": PairLoss(lambda x, beta, gamma: ipo_loss(dpo_logits(x), beta), True, False),
    "dpo-norm": PairLoss(lambda x, beta, gamma: dpo_sigmoid_loss(normalised_dpo_logits(x), beta), True, True),
    "simpo": PairLoss(
        lambda x, beta, gamma: simpo_loss(x.chosen / x.chosen_tokens, x.rejected / x.rejected_tokens, beta, gamma),
        False, True),
}


def implicit_rewards(x: PairLogps, loss: str, beta: float) -> tuple[Tensor, Tensor]:
    """The rewards a preference loss implies for each answer, for the logged accuracy and margins.

    DPO's implicit reward is r(x, y) = beta (log pi(y|x) - log pi_ref(y|x)) (Rafailov et al. 2023, eq. 5); the
    length-normalised losses divide it by |y|, and SimPO's is beta log pi(y|x) / |y| (Meng et al. 2024, eq. 4).
    """
    spec = PAIR_LOSSES[loss]
    chosen, rejected = x.chosen, x.rejected
    if spec.uses_reference:
        chosen, rejected = chosen - x.ref_chosen, rejected - x.ref_rejected
    if spec.length_normalised:
        chosen, rejected = chosen / x.chosen_tokens, rejected / x.rejected_tokens
    return beta * chosen, beta * rejected
