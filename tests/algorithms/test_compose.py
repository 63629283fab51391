"""The composed objective against hand-derived numbers: policy + beta * KL - c * entropy, the correction
weighting the policy term only, aggregation under the step's denominator, metric-only terms."""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algorithms.aggregate import aggregate
from rlvr.algorithms.compose import Correction, Objective, TokenInputs, entropy_term, kl_term, policy_term
from rlvr.algorithms.kl import kl_k1
from rlvr.algorithms.objectives import reinforce


def _x():
    # one sequence, two counted tokens and one padded slot
    return TokenInputs(
        logprobs=torch.tensor([[-1.0, -2.0, -9.0]]), old_logprobs=torch.tensor([[-1.0, -2.0, -9.0]]),
        loss_mask=torch.tensor([[True, True, False]]), advantages=torch.tensor([0.5]),
        sampler_logprobs=torch.tensor([[-1.0 - math.log(4.0), -2.0, 0.0]]),  # token 0: rho = 4
        ref_logprobs=torch.tensor([[-1.5, -1.0, 0.0]]), entropy=torch.tensor([[0.3, 0.7, 5.0]]),
    )  # fmt: skip


def _objective(correction: Correction | None = None, metric_terms=()):
    terms = (("policy", policy_term(reinforce, {}), 1.0), ("kl", kl_term(kl_k1, {}), 0.1), ("entropy", entropy_term, 0.2))
    return Objective(terms, lambda pt, m, d: aggregate(pt, m, "token_mean", denominator=d),
                     lambda masks: sum(m.sum() for m in masks).float(), correction or Correction(), metric_terms)  # fmt: skip


def test_terms_add_with_their_coefficients_over_the_global_denominator():
    obj = _objective()
    loss, metrics = obj(_x(), torch.tensor(4.0))  # as if the step had 4 counted tokens in all
    # per token: -A*logp + 0.1*(logp - ref) - 0.2*H  ->  token 0: 0.5 + 0.05 - 0.06 = 0.49;
    # token 1: 1.0 - 0.1 - 0.14 = 0.76; sum 1.25 over the step's 4 tokens
    assert float(loss) == pytest.approx(1.25 / 4)
    assert float(metrics["kl"]) == pytest.approx((0.5 - 1.0) / 2)  # mean over the 2 counted tokens
    assert float(metrics["entropy"]) == pytest.approx(0.5)
    assert float(obj(_x(), torch.tensor(4.0), {"kl": 0.0})[0]) == pytest.approx((0.5 - 0.06 + 1.0 - 0.14) / 4)


def test_truncated_is_weights_only_the_policy_term():
    loss, metrics = _objective(Correction("tis", cap=2.0))(_x(), torch.tensor(2.0))
    # token 0's policy loss 0.5 is weighted by min(rho = 4, cap 2) = 2; KL and entropy are not
    assert float(loss) == pytest.approx((2 * 0.5 + 0.05 - 0.06 + 0.76) / 2)
    assert float(metrics["mismatch/max_ratio"]) == pytest.approx(4.0)


def test_masked_is_drops_the_out_of_band_token_from_the_policy_term():
    loss, _ = _objective(Correction("mis", cap=2.0))(_x(), torch.tensor(2.0))
    assert float(loss) == pytest.approx((0.0 + 0.05 - 0.06 + 0.76) / 2)


def test_metric_terms_are_logged_not_differentiated():
    terms = (("policy", policy_term(reinforce, {}), 1.0),)
    obj = Objective(terms, lambda pt, m, d: aggregate(pt, m, "token_mean", denominator=d),
                    lambda masks: masks[0].sum().float(), metric_terms=(("kl", kl_term(kl_k1, {})),))  # fmt: skip
    x = _x()
    x.ref_logprobs = None  # a metric term whose input is missing is skipped, not an error
    loss, metrics = obj(x, torch.tensor(2.0))
    assert "kl" not in metrics and float(loss) == pytest.approx((0.5 + 1.0) / 2)
    loss, metrics = obj(_x(), torch.tensor(2.0))
    assert float(metrics["kl"]) == pytest.approx(-0.25) and float(loss) == pytest.approx(0.75)
