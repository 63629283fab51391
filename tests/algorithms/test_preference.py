"""The DPO family and Bradley-Terry against hand-derived numbers.

One pair throughout: policy chosen / rejected summed logprobs -2 / -5, reference -3 / -4, lengths 2 / 4.
So the DPO log-ratio margin h = (-2 + 3) - (-5 + 4) = 2.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algorithms.preference import bradley_terry, dpo_sigmoid, ipo, length_normalized_dpo, simpo
from rlvr.algorithms.registry import PREFERENCE_LOSSES, check_settings


def _pair(grad=False):
    c = torch.tensor([-2.0], requires_grad=grad)
    return c, torch.tensor([-5.0]), torch.tensor([-3.0]), torch.tensor([-4.0])


LENS = {"chosen_len": torch.tensor([2.0]), "rejected_len": torch.tensor([4.0])}


def softplus(x: float) -> float:  # -log sigmoid(-x) = log(1 + e^x)
    return math.log1p(math.exp(x))


def test_sigmoid_dpo_value_gradient_and_metrics():
    c, r, rc, rr = _pair(grad=True)
    loss, m = dpo_sigmoid(c, r, rc, rr, beta=0.5)
    assert float(loss) == pytest.approx(softplus(-1.0))  # -log s(0.5 * 2) = 0.31326
    loss.sum().backward()
    assert float(c.grad) == pytest.approx(-0.5 / (1 + math.e))  # -beta * s(-beta h)
    assert float(m["rewards/chosen"]) == pytest.approx(0.5) and float(m["rewards/rejected"]) == pytest.approx(-0.5)
    assert float(m["rewards/margin"]) == pytest.approx(1.0) and float(m["rewards/accuracy"]) == 1.0


def test_label_smoothing_is_conservative_dpo():
    loss, _ = dpo_sigmoid(*_pair(), beta=0.5, label_smoothing=0.1)
    assert float(loss) == pytest.approx(0.9 * softplus(-1.0) + 0.1 * softplus(1.0))  # 0.41326
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_sigmoid(*_pair(), beta=0.5, label_smoothing=0.5)


def test_ipo_targets_half_inverse_beta():
    assert float(ipo(*_pair(), beta=0.5)[0]) == pytest.approx((2.0 - 1.0) ** 2)
    assert float(ipo(*_pair(), beta=0.25)[0]) == pytest.approx(0.0)  # h = 2 = 1 / (2 * 0.25): at the target


def test_length_normalized_dpo_divides_by_tokens():
    loss, m = length_normalized_dpo(*_pair(), beta=2.0, **LENS)
    # h = 1/2 - (-1)/4 = 0.75; logits = 1.5
    assert float(loss) == pytest.approx(softplus(-1.5))
    assert float(m["rewards/chosen"]) == pytest.approx(1.0) and float(m["rewards/rejected"]) == pytest.approx(-0.5)


def test_simpo_needs_no_reference():
    loss, m = simpo(torch.tensor([-2.0]), torch.tensor([-5.0]), beta=2.0, gamma=1.0, **LENS)
    # rewards 2 * -2 / 2 = -2 and 2 * -5 / 4 = -2.5; logits = 0.5 - 1 = -0.5
    assert float(loss) == pytest.approx(softplus(0.5))
    assert float(m["rewards/accuracy"]) == 1.0
    with_ref = simpo(*_pair(), beta=2.0, gamma=1.0, **LENS)[0]  # the reference, if passed, is ignored
    assert float(with_ref) == pytest.approx(float(loss))


def test_bradley_terry():
    loss, m = bradley_terry(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    assert loss.tolist() == pytest.approx([softplus(-1.0), softplus(2.0)])
    assert float(m["rewards/accuracy"]) == 0.5


@pytest.mark.parametrize("name", sorted(PREFERENCE_LOSSES))
def test_every_loss_takes_the_one_call_convention(name):
    settings = {"simpo": {"beta": 2.0, "gamma": 1.0}}.get(name, {"beta": 0.1})
    check_settings("preference", name, PREFERENCE_LOSSES[name], settings)
    loss, metrics = PREFERENCE_LOSSES[name](*_pair(), **LENS, **settings)
    assert loss.shape == (1,) and {"rewards/margin", "rewards/accuracy"} <= metrics.keys()
