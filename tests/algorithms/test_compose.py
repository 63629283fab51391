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


def _decoupled(logprobs, old, sampler):
    """PPO-clip + truncated IS over one sequence of two tokens with A = 1.5 and the step's denominator 2."""
    from rlvr.algorithms.objectives import ppo_clip

    obj = Objective((("policy", policy_term(ppo_clip, {"clip_low": 0.2, "clip_high": 0.2}), 1.0),),
                    lambda pt, m, d: aggregate(pt, m, "token_mean", denominator=d),
                    lambda masks: masks[0].sum().float(), Correction("tis", cap=2.0))  # fmt: skip
    lp = torch.log(torch.tensor([logprobs])).requires_grad_()
    x = TokenInputs(logprobs=lp, old_logprobs=lp.detach() if old is None else torch.log(torch.tensor([old])),
                    loss_mask=torch.tensor([[True, True]]), advantages=torch.tensor([1.5]),
                    sampler_logprobs=torch.log(torch.tensor([sampler])))  # fmt: skip
    obj(x, torch.tensor(2.0))[0].backward()
    return lp.grad[0].tolist()


def test_one_step_off_with_one_update_is_the_truncated_is_policy_gradient():
    # mu = 1: old = the current policy (ratio 1, no clip), the behaviour policy sampled the batch.
    # w = min(pi / pi_behaviour, 2): 0.5 / 0.125 = 4 -> 2, 0.2 / 0.4 = 0.5; d loss / d logp = -w * A / 2
    assert _decoupled([0.5, 0.2], None, [0.125, 0.4]) == pytest.approx([-2 * 1.5 / 2, -0.5 * 1.5 / 2])


def test_decoupled_ppo_clips_against_the_proximal_policy_and_weights_by_the_behaviour_one():
    # mu > 1 (AReaL's decoupled objective): the trust region is around pi_old (the proximal policy, the
    # weights before this step's updates), the IS weight is pi_old / pi_behaviour.  Token 0: r = 0.5 / 0.4
    # = 1.25 > 1.2 with A > 0, clipped: no gradient (its weight min(0.4 / 0.125, 2) = 2 does not matter);
    # token 1: r = 1, w = 0.2 / 0.4 = 0.5 -> -0.5 * 1.5 * r / 2
    assert _decoupled([0.5, 0.2], [0.4, 0.2], [0.125, 0.4]) == pytest.approx([0.0, -0.5 * 1.5 / 2])
