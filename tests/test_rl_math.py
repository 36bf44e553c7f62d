"""The RL estimators and losses against values computed by hand (the arithmetic is in each test's comments)."""

from __future__ import annotations

import math

import pytest
import torch

from rlaif.train import rl_math as m


def close(a, b, tol=1e-5):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


def test_gae_by_hand():
    # gamma 0.9, lam 0.5 (gamma*lam = 0.45).
    # Row 0: d2 = 1 - 0.3 = 0.7; d1 = 0.9*0.3 - 0.4 = -0.13; d0 = 0.9*0.4 - 0.5 = -0.14
    #        A2 = 0.7, A1 = -0.13 + 0.45*0.7 = 0.185, A0 = -0.14 + 0.45*0.185 = -0.05675
    # Row 1 (last position is padding with garbage): A1 = 2 - 1 = 1, A0 = 0.9*1 - 1 + 0.45*1 = 0.35
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 9.0]])
    values = torch.tensor([[0.5, 0.4, 0.3], [1.0, 1.0, 7.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = m.gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert close(adv, [[-0.05675, 0.185, 0.7], [0.35, 1.0, 0.0]])
    assert close(ret, [[0.44325, 0.585, 1.0], [1.35, 2.0, 0.0]])


def test_gae_lambda_one_is_discounted_return_minus_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, -1.0, 2.0]])
    adv, ret = m.gae(rewards, values, torch.ones(1, 3), gamma=0.5, lam=1.0)
    # R0 = 1 + 0.5*2 + 0.25*3 = 2.75, R1 = 2 + 1.5 = 3.5, R2 = 3
    assert close(ret, [[2.75, 3.5, 3.0]])
    assert close(adv, [[2.25, 4.5, 1.0]])


def test_masked_whiten_by_hand():
    # masked values 1, 2, 3, 4: mean 2.5, unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    s = math.sqrt(5 / 3)
    assert close(m.masked_whiten(x, mask), [[-1.5 / s, -0.5 / s, 0.5 / s], [1.5 / s, 0.0, 0.0]])
    assert close(m.masked_whiten(x, mask, shift_mean=False),
                 [[-1.5 / s + 2.5, -0.5 / s + 2.5, 0.5 / s + 2.5], [1.5 / s + 2.5, 0.0, 0.0]])
    assert close(m.masked_mean(x, mask), 2.5) and close(m.masked_var(x, mask), 5 / 3)


def test_adaptive_kl_controller_by_hand():
    # e = clip((KL - 6) / 6, -0.2, 0.2); beta *= 1 + e * 256 / 10000
    assert m.adaptive_kl_coef(0.1, 9.0, 6.0, 10_000, 256) == pytest.approx(0.1 * (1 + 0.2 * 0.0256))  # clipped up
    assert m.adaptive_kl_coef(0.1, 3.0, 6.0, 10_000, 256) == pytest.approx(0.1 * (1 - 0.2 * 0.0256))  # clipped down
    assert m.adaptive_kl_coef(0.1, 6.6, 6.0, 10_000, 256) == pytest.approx(0.1 * (1 + 0.1 * 0.0256))  # inside
    assert m.adaptive_kl_coef(0.1, 60.0, None, 10_000, 256) == 0.1  # fixed
    ctl = m.AdaptiveKLController(beta=0.1, target=6.0, horizon=10_000)
    ctl.update(9.0, 256)
    ctl.update(9.0, 256)
    assert ctl.beta == pytest.approx(0.1 * 1.00512**2)


def test_kl_estimators_by_hand():
    logp, ref = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))
    assert close(m.kl_k1(logp, ref), [math.log(2)])
    assert close(m.kl_k3(logp, ref), [0.5 + math.log(2) - 1])  # exp(-ln 2) - (-ln 2) - 1
    assert close(m.kl_k3(ref, ref), [0.0]) and set(m.KL_ESTIMATORS) == {"k1", "k3"}


def test_kl_penalised_rewards_put_the_score_on_the_last_token():
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 0.5, 9.0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    rewards = m.kl_penalised_rewards(torch.tensor([2.0, 3.0]), kl, mask, beta=0.5)
    assert close(rewards, [[-0.05, -0.1, -0.15 + 2.0], [-0.25, -0.25 + 3.0, 0.0]])


def test_eos_penalty():
    out = m.eos_penalised_score(torch.tensor([1.0, 1.0, -0.5]), torch.tensor([True, False, False]), 1.0)
    assert close(out, [1.0, 0.0, -1.5])


def test_clipped_policy_loss_by_hand():
    # ratios 1.5, 1.5, 0.5, 0.5 with advantages +1, -1, +1, -1 and eps 0.2:
    # (+1, 1.5): max(-1.5, -1.2) = -1.2 clipped;  (-1, 1.5): max(1.5, 1.2) = 1.5
    # (+1, 0.5): max(-0.5, -0.8) = -0.5;          (-1, 0.5): max(0.5, 0.8) = 0.8 clipped
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 1.5, 0.5, 0.5]]))
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    loss, clipped = m.clipped_policy_loss(logp, old, adv, clip=0.2)
    assert close(loss, [[-1.2, 1.5, -0.5, 0.8]]) and close(clipped, [[1.0, 0.0, 0.0, 1.0]])


def test_clipped_value_loss_by_hand():
    # V 1.0, V_old 0.5, eps 0.2 -> V_clip 0.7. R = 0: max(1, 0.49) / 2 = 0.5; R = 2: max(1, 1.69) / 2 = 0.845
    values, old = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.5, 0.5]])
    loss, clipped = m.clipped_value_loss(values, old, torch.tensor([[0.0, 2.0]]), clip=0.2)
    assert close(loss, [[0.5, 0.845]]) and close(clipped, [[0.0, 1.0]])


def test_group_baselines_by_hand():
    scores = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    # group 0: mean 0.5, unbiased std sqrt(1/3); group 1 has no spread: advantages 0
    std = math.sqrt(1 / 3)
    a = 0.5 / (std + 1e-4)
    assert close(m.grpo_advantages(scores), [[a, -a, -a, a], [0.0] * 4])
    assert close(m.grpo_advantages(scores, scale=False), [[0.5, -0.5, -0.5, 0.5], [0.0] * 4])
    # RLOO: 1 - (0 + 0 + 1)/3 = 2/3, 0 - 2/3
    assert close(m.rloo_advantages(scores), [[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0.0] * 4])
    assert close(m.rloo_advantages(scores), 4 / 3 * m.grpo_advantages(scores, scale=False))
    with pytest.raises(ValueError, match="at least 2"):
        m.rloo_advantages(torch.ones(3, 1))


def test_entropy_of_uniform_and_peaked_logits():
    assert close(m.entropy_from_logits(torch.zeros(2, 8)), [math.log(8)] * 2)
    assert m.entropy_from_logits(torch.tensor([[100.0, 0.0, 0.0]])).item() < 1e-6
