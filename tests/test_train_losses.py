"""Each training loss against values computed by hand from its equation (rlaif/train/losses.py).

The inputs are chosen so the arithmetic is short: a pair whose policy log-probs are -10 (chosen, 4 tokens) and
-12 (rejected, 2 tokens) and whose reference gives both -11, so the DPO log-ratio difference is
h = (-10 + 11) - (-12 + 11) = 2. Expected values are written as the closed forms they come from:
-log sigmoid(z) = log(1 + e^-z) = log1p(exp(-z)).
"""

from __future__ import annotations

import math

import pytest
import torch

from rlaif.train.losses import (
    PAIR_LOSSES,
    PairLogps,
    bradley_terry_loss,
    cdpo_loss,
    dpo_logits,
    dpo_sigmoid_loss,
    implicit_rewards,
    ipo_loss,
    nll_loss,
    normalised_dpo_logits,
    simpo_loss,
)


def softplus_neg(z: float) -> float:
    """-log sigmoid(z)."""
    return math.log1p(math.exp(-z))


def pair(p_chosen: float = 0.8) -> PairLogps:
    def t(v: float) -> torch.Tensor:
        return torch.tensor([v], dtype=torch.float64)

    return PairLogps(chosen=t(-10.0), rejected=t(-12.0), chosen_tokens=t(4.0), rejected_tokens=t(2.0),
                     p_chosen=t(p_chosen), ref_chosen=t(-11.0), ref_rejected=t(-11.0))


def test_nll_sums_the_masked_tokens_only():
    logps = torch.tensor([[0.0, -1.0, -2.0], [0.0, -0.5, -3.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    assert nll_loss(logps, mask).tolist() == [3.0, 0.5]


def test_bradley_terry_with_hard_and_soft_labels():
    rc, rr = torch.tensor([2.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    hard = bradley_terry_loss(rc, rr, torch.tensor([1.0], dtype=torch.float64))
    assert hard.item() == pytest.approx(softplus_neg(2.0))  # 0.126928
    soft = bradley_terry_loss(rc, rr, torch.tensor([0.75], dtype=torch.float64))
    assert soft.item() == pytest.approx(0.75 * softplus_neg(2.0) + 0.25 * softplus_neg(-2.0))  # 0.626928
    # At p = 0.5 the loss is symmetric in the two rewards: no preference to learn.
    half = torch.tensor([0.5], dtype=torch.float64)
    assert bradley_terry_loss(rc, rr, half).item() == pytest.approx(bradley_terry_loss(rr, rc, half).item())


def test_dpo_logits_and_their_length_normalised_form():
    assert dpo_logits(pair()).item() == 2.0
    assert normalised_dpo_logits(pair()).item() == pytest.approx(1 / 4 - (-1) / 2)  # 0.75


def test_dpo_sigmoid():
    assert dpo_sigmoid_loss(dpo_logits(pair()), beta=0.1).item() == pytest.approx(softplus_neg(0.2))  # 0.598139


def test_cdpo_uses_each_rows_soft_label_and_is_dpo_at_p_one():
    x = pair(p_chosen=0.8)
    expected = 0.8 * softplus_neg(0.2) + 0.2 * softplus_neg(-0.2)  # 0.638139
    assert cdpo_loss(dpo_logits(x), x.p_chosen, beta=0.1).item() == pytest.approx(expected)
    sure = pair(p_chosen=1.0)
    assert cdpo_loss(dpo_logits(sure), sure.p_chosen, 0.1).item() == pytest.approx(softplus_neg(0.2))
    rows = torch.tensor([2.0, 2.0], dtype=torch.float64)
    two = cdpo_loss(rows, torch.tensor([0.6, 0.9], dtype=torch.float64), beta=0.1)
    assert two[0] > two[1]  # a less certain label pushes less: higher loss at the same logit


def test_ipo_regresses_the_logit_to_one_over_two_beta():
    assert ipo_loss(dpo_logits(pair()), beta=0.1).item() == pytest.approx((2.0 - 5.0) ** 2)  # 9
    assert ipo_loss(torch.tensor([5.0]), beta=0.1).item() == pytest.approx(0.0)


def test_simpo_is_length_normalised_with_a_margin_and_no_reference():
    x = pair()
    # beta * (-10/4 - (-12/2)) - gamma = 2 * 3.5 - 1 = 6
    assert simpo_loss(x.chosen / x.chosen_tokens, x.rejected / x.rejected_tokens, beta=2.0, gamma=1.0).item() == (
        pytest.approx(softplus_neg(6.0)))
    x.ref_chosen = x.ref_rejected = None  # SimPO never reads a reference
    assert PAIR_LOSSES["simpo"].compute(x, 2.0, 1.0).item() == pytest.approx(softplus_neg(6.0))


@pytest.mark.parametrize("name, expected", [
    ("dpo", softplus_neg(0.2)),
    ("cdpo", 0.8 * softplus_neg(0.2) + 0.2 * softplus_neg(-0.2)),
    ("ipo", 9.0),
    ("dpo-norm", softplus_neg(2.0 * 0.75)),
    ("simpo", softplus_neg(6.0)),
])
def test_the_loss_table_computes_each_loss(name, expected):
    beta = {"dpo": 0.1, "cdpo": 0.1, "ipo": 0.1, "dpo-norm": 2.0, "simpo": 2.0}[name]
    assert PAIR_LOSSES[name].compute(pair(), beta, 1.0).item() == pytest.approx(expected)
    assert PAIR_LOSSES[name].uses_reference == (name != "simpo")


def test_implicit_rewards():
    chosen, rejected = implicit_rewards(pair(), "dpo", 0.1)
    assert (chosen.item(), rejected.item()) == (pytest.approx(0.1), pytest.approx(-0.1))
    chosen, rejected = implicit_rewards(pair(), "dpo-norm", 2.0)
    assert (chosen.item(), rejected.item()) == (pytest.approx(2.0 * 1 / 4), pytest.approx(2.0 * -1 / 2))
    chosen, rejected = implicit_rewards(pair(), "simpo", 2.0)
    assert (chosen.item(), rejected.item()) == (pytest.approx(-5.0), pytest.approx(-12.0))


def test_losses_have_gradients_in_the_right_direction():
    chosen = torch.tensor([-10.0], requires_grad=True)
    x = PairLogps(chosen=chosen, rejected=torch.tensor([-12.0]), chosen_tokens=torch.tensor([4.0]),
                  rejected_tokens=torch.tensor([2.0]), p_chosen=torch.tensor([0.9]),
                  ref_chosen=torch.tensor([-11.0]), ref_rejected=torch.tensor([-11.0]))
    for name in ("dpo", "cdpo", "dpo-norm", "simpo"):
        chosen.grad = None
        PAIR_LOSSES[name].compute(x, 0.5, 0.1).sum().backward()
        assert chosen.grad.item() < 0, name  # raising the chosen answer's log-prob lowers the loss
