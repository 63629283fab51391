import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.algorithms.kl import AdaptiveKLController, FixedKLController, kl_k1, kl_k2, kl_k3


def test_estimators_hand_values():
    # logp = [-1, -2], ref = [-1.5, -1]  ->  logp - ref = [0.5, -1],  ref - logp = [-0.5, 1]
    #   k1 = [0.5, -1];  k2 = 0.5*[0.25, 1] = [0.125, 0.5]
    #   k3 = [e^-0.5 + 0.5 - 1, e^1 - 1 - 1] = [0.1065307, 0.7182818]
    logp, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])
    assert_close(kl_k1(logp, ref), torch.tensor([[0.5, -1.0]]))
    assert_close(kl_k2(logp, ref), torch.tensor([[0.125, 0.5]]))
    assert_close(kl_k3(logp, ref), torch.tensor([[0.1065307, 0.7182818]]))


def test_k1_and_k3_are_unbiased_for_kl():
    # E_{x~p}[k(x)] summed exactly over a small vocabulary equals KL(p || q) for k1 and k3
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    logq = torch.log_softmax(torch.randn(7, generator=g, dtype=torch.float64), -1)
    p = logp.exp()
    kl = (p * (logp - logq)).sum()
    assert_close((p * kl_k1(logp, logq)).sum(), kl)
    assert_close((p * kl_k3(logp, logq)).sum(), kl)
    assert (kl_k3(logp, logq) >= 0).all() and (kl_k2(logp, logq) >= 0).all()


def test_k3_clamps_extreme_log_ratios():
    # ref - logp = 50 would give e^50 ~ 5e21; clamped at 10: e^10 - 10 - 1 = 22015.4658
    out = kl_k3(torch.tensor([[-60.0]]), torch.tensor([[-10.0]]))
    assert_close(out, torch.tensor([[math.exp(10.0) - 11.0]]))
    # clamp=inf disables it: e^(1e4) overflows to inf, which is the point of the default
    assert torch.isinf(kl_k3(torch.tensor([[-1e4]]), torch.tensor([[0.0]]), clamp=float("inf"))).all()


def test_k3_gradient_in_float64():
    g = torch.Generator().manual_seed(1)
    logp = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(2, 3, generator=g, dtype=torch.float64)
    for fn in (kl_k1, kl_k2, kl_k3):
        assert torch.autograd.gradcheck(lambda x, fn=fn: fn(x, ref), (logp,))


def test_adaptive_controller_follows_ziegler():
    # init 0.1, target 6, horizon 10000
    #   kl 9: error = clip(9/6 - 1 = 0.5) = 0.2 -> beta *= 1 + 0.2*256/10000 = 1.00512 -> 0.100512
    #   kl 6: error 0 -> unchanged;  kl 3: error clip(-0.5) = -0.2 -> *= 0.99488 -> 0.09999537
    c = AdaptiveKLController(0.1, target=6.0, horizon=10000)
    assert c.update(9.0, 256) == pytest.approx(0.100512)
    assert c.update(6.0, 256) == pytest.approx(0.100512)
    assert c.update(3.0, 256) == pytest.approx(0.100512 * 0.99488)
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(0.1, target=0.0, horizon=10)


def test_fixed_controller():
    c = FixedKLController(0.05)
    assert c.update(100.0, 10) == 0.05 and c.value == 0.05
