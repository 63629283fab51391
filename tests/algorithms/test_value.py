"""PPO critic maths by hand: clipped value loss, whitening, explained variance; GAE against a loop."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algorithms.advantages import gae, token_rewards_with_kl
from rlvr.algorithms.value import explained_variance, value_loss, whiten


def test_value_loss_clips_like_ppo2():
    v, old, ret = torch.tensor([[1.5, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    loss, m = value_loss(v, old, ret, mask, clip=0.2)
    # token 0: unclipped (1.5-0)^2 = 2.25; clipped V = 1.2 -> 1.44; max = 2.25.  token 1: both (0-1)^2 = 1
    assert loss[0].tolist() == pytest.approx([0.5 * 2.25, 0.5 * 1.0])
    assert float(m["value/clip_frac"]) == 0.0
    v2 = torch.tensor([[0.5, 0.0]])  # moving toward the return: clipped V = 0.8 -> 0.64 > 0.25
    loss2, m2 = value_loss(v2, old, ret, mask, clip=0.2)
    assert loss2[0, 0] == pytest.approx(0.5 * 0.64) and float(m2["value/clip_frac"]) == 0.5
    assert value_loss(v2, old, ret, mask, clip=None)[0][0, 0] == pytest.approx(0.5 * 0.25)


def test_whiten_and_explained_variance():
    x = torch.tensor([[1.0, 2.0, 3.0, 99.0]])
    mask = torch.tensor([[True, True, True, False]])
    w = whiten(x, mask)
    assert w[0, :3].tolist() == pytest.approx([-1.0, 0.0, 1.0], abs=1e-6) and w[0, 3] == 0
    assert whiten(x, mask, shift_mean=False)[0, :3].tolist() == pytest.approx([1.0, 2.0, 3.0], abs=1e-6)
    ret = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    assert explained_variance(ret, ret, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(ret, 2.0), ret, mask) == pytest.approx(0.0)
    assert math.isnan(explained_variance(ret, torch.ones_like(ret), mask))


def test_gae_by_hand_with_kl_in_the_reward():
    mask = torch.tensor([[True, True, False]])
    kl = torch.tensor([[0.1, 0.2, 5.0]])
    r = token_rewards_with_kl(torch.tensor([1.0]), kl, mask, beta=0.5)
    assert r[0].tolist() == pytest.approx([-0.05, 1.0 - 0.1, 0.0])
    values = torch.tensor([[0.3, 0.6, 9.0]])
    adv, ret = gae(r, values, mask, gamma=1.0, lam=0.5)
    d1 = 0.9 - 0.6  # last valid token: V beyond is 0
    d0 = -0.05 + 0.6 - 0.3
    assert adv[0].tolist() == pytest.approx([d0 + 0.5 * d1, d1, 0.0])
    assert ret[0].tolist() == pytest.approx([d0 + 0.5 * d1 + 0.3, d1 + 0.6, 0.0])
