"""Distillation losses against numbers derived by hand (two-candidate distributions).

T = (1/2, 1/2), S = (1/4, 3/4):
    KL(T||S) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3)
    KL(S||T) = 1/4 ln(1/2) + 3/4 ln(3/2)
    M = 1/2 T + 1/2 S = (3/8, 5/8):  KL(T||M) = 1/2 ln(16/15),  KL(S||M) = 1/4 ln(2/3) + 3/4 ln(6/5)
"""

from __future__ import annotations

import math

import pytest
import torch

from rlvr.algorithms.aggregate import aggregate, global_denominator
from rlvr.algorithms.compose import Objective, TokenInputs
from rlvr.distill.losses import (
    Projector,
    forward_kl,
    generalized_jsd,
    hard_target_ce,
    hidden_state_loss,
    reverse_kl,
    reverse_kl_advantage,
    soft_targets,
    top1_agreement,
)
from rlvr.distill.terms import hard_ce_term, kd_term


def _lp(*probs: float) -> torch.Tensor:  # one position: [1, 1, K]
    return torch.tensor([[list(probs)]], dtype=torch.float64).log()


T, S = _lp(0.5, 0.5), _lp(0.25, 0.75)
FKL = 0.5 * math.log(4 / 3)
RKL = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
JSD = 0.5 * (0.5 * math.log(16 / 15)) + 0.5 * (0.25 * math.log(2 / 3) + 0.75 * math.log(6 / 5))


def test_forward_and_reverse_kl_by_hand() -> None:
    assert float(forward_kl(S, T)) == pytest.approx(FKL, abs=1e-6)
    assert float(reverse_kl(S, T)) == pytest.approx(RKL, abs=1e-6)
    assert float(forward_kl(T, T)) == pytest.approx(0.0, abs=1e-7)


def test_jsd_beta_convention() -> None:
    """beta weighs the teacher in the mixture (GKD eq. 1, TRL); 0 and 1 are forward and reverse KL."""
    assert float(generalized_jsd(S, T, beta=0.5)) == pytest.approx(JSD, abs=1e-6)
    assert float(generalized_jsd(S, T, beta=0.0)) == pytest.approx(FKL, abs=1e-6)
    assert float(generalized_jsd(S, T, beta=1.0)) == pytest.approx(RKL, abs=1e-6)
    # beta = 0.25: M = 1/4 T + 3/4 S = (5/16, 11/16)
    m = (5 / 16, 11 / 16)
    kl_t = 0.5 * math.log(0.5 / m[0]) + 0.5 * math.log(0.5 / m[1])
    kl_s = 0.25 * math.log(0.25 / m[0]) + 0.75 * math.log(0.75 / m[1])
    assert float(generalized_jsd(S, T, beta=0.25)) == pytest.approx(0.25 * kl_t + 0.75 * kl_s, abs=1e-6)
    # the endpoints are the rescaled limits: JSD_beta / beta -> KL(T||S)
    assert float(generalized_jsd(S, T, beta=1e-6)) / 1e-6 == pytest.approx(FKL, rel=1e-4)
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(S, T, beta=1.5)


def test_temperature_softens_both_and_scales_by_tau_squared() -> None:
    """Logits (0, 0) and (0, ln 3) at tau = 2: S = (1, sqrt 3) / (1 + sqrt 3), loss x 4."""
    teacher = torch.zeros(1, 1, 2, dtype=torch.float64)
    student = torch.tensor([[[0.0, math.log(3)]]], dtype=torch.float64)
    s0 = 1 / (1 + math.sqrt(3))
    expected = 4 * (0.5 * math.log(0.5 / s0) + 0.5 * math.log(0.5 / (1 - s0)))
    assert float(forward_kl(student, teacher, temperature=2.0)) == pytest.approx(expected, abs=1e-6)
    assert float(forward_kl(student, teacher)) == pytest.approx(FKL, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        soft_targets(student, 0.0)


def test_topk_slices_are_renormalised() -> None:
    """Teacher (.4, .4, .1, .1) top-2 -> (1/2, 1/2); student (.2, .6, .1, .1) at those ids -> (1/4, 3/4)."""
    teacher_full = torch.tensor([0.4, 0.4, 0.1, 0.1], dtype=torch.float64).log()
    student_full = torch.tensor([0.2, 0.6, 0.1, 0.1], dtype=torch.float64).log()
    ids = torch.tensor([0, 1])
    loss = forward_kl(student_full[ids].view(1, 1, 2), teacher_full[ids].view(1, 1, 2))
    assert float(loss) == pytest.approx(FKL, abs=1e-6)


def test_hard_target_and_agreement() -> None:
    assert float(hard_target_ce(S, torch.tensor([[0]]))) == pytest.approx(math.log(4), abs=1e-6)
    assert float(hard_target_ce(S, torch.tensor([[1]]))) == pytest.approx(math.log(4 / 3), abs=1e-6)
    teacher = _lp(0.6, 0.4)
    assert float(top1_agreement(S, teacher)) == 0.0
    assert float(top1_agreement(_lp(0.7, 0.3), teacher)) == 1.0


def test_reverse_kl_advantage_policy_gradient_is_the_exact_reverse_kl_gradient() -> None:
    """sum_y S(y) * (-A(y)) * grad log S(y) = grad KL(S||T): the on-policy distillation identity."""
    teacher = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    logits = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64, requires_grad=True)
    logp = torch.log_softmax(logits, -1)
    adv = reverse_kl_advantage(logp, teacher)  # [3], detached
    assert not adv.requires_grad
    assert float(adv[0]) == pytest.approx(float(teacher[0] - logp[0].detach()), abs=1e-12)
    surrogate = (logp.detach().exp() * -adv * logp).sum()  # expectation over y ~ S, enumerated
    (g_pg,) = torch.autograd.grad(surrogate, logits, retain_graph=True)
    exact = reverse_kl(logp.view(1, 1, 3), teacher.view(1, 1, 3)).sum()
    (g_exact,) = torch.autograd.grad(exact, logits)
    assert torch.allclose(g_pg, g_exact, atol=1e-10)


def test_hidden_state_loss_mse_and_cosine() -> None:
    proj = Projector(2, 2)  # identity at start when widths agree
    s = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])
    t = torch.tensor([[[0.0, 1.0], [2.0, 2.0]]])
    assert hidden_state_loss(s, t, proj, kind="mse")[0].tolist() == pytest.approx([1.0, 1.0])
    assert hidden_state_loss(s, t, proj, kind="cosine")[0].tolist() == pytest.approx([1.0, 0.0], abs=1e-6)
    wide = Projector(2, 3)
    with torch.no_grad():
        wide.linear.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    # [1, 1] -> [1, 1, 2]; target [1, 1, 0]: MSE = 4 / 3
    out = hidden_state_loss(torch.tensor([[[1.0, 1.0]]]), torch.tensor([[[1.0, 1.0, 0.0]]]), wide)
    assert float(out) == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="teacher's width"):
        hidden_state_loss(s, torch.zeros(1, 2, 3), proj)
    with pytest.raises(ValueError, match="mse"):
        hidden_state_loss(s, t, proj, kind="l1")


def _inputs(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> TokenInputs:
    lp = student[..., 0]
    return TokenInputs(logprobs=lp, old_logprobs=lp.detach(), loss_mask=mask, topk_logprobs=student,
                       teacher_topk_logprobs=teacher)  # fmt: skip


def test_kd_term_under_the_global_denominator_splits_like_the_full_batch() -> None:
    """Forward KL + 0.5 x hard CE, token mean over the step: 2 micro-batches sum to the 1-batch loss."""
    torch.manual_seed(0)
    student = torch.randn(4, 3, 5, dtype=torch.float64, requires_grad=True)
    teacher = torch.log_softmax(torch.randn(4, 3, 5, dtype=torch.float64), -1)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    objective = Objective(
        terms=(("distill", kd_term(forward_kl, {}), 1.0), ("hard", hard_ce_term, 0.5)),
        aggregate=lambda pt, m, d: aggregate(pt, m, "token_mean", denominator=d),
        denominator=lambda masks: global_denominator(masks, "token_mean"),
    )
    full, metrics = objective(_inputs(student, teacher, mask), objective.denominator([mask]))
    d = objective.denominator([mask[:2], mask[2:]])
    split = sum(objective(_inputs(student[i : i + 2], teacher[i : i + 2], mask[i : i + 2]), d)[0] for i in (0, 2))
    assert float(full) == pytest.approx(float(split), abs=1e-12)
    # by hand: the mean over the 6 counted tokens of KL(T||S) + 0.5 * -log S(argmax T)
    s = torch.log_softmax(student, -1)
    per = (teacher.exp() * (teacher - s)).sum(-1) - 0.5 * s.gather(-1, teacher.argmax(-1, keepdim=True)).squeeze(-1)
    assert float(full) == pytest.approx(float(per[mask].sum() / 6), abs=1e-12)
    assert 0.0 <= float(metrics["distill/top1_agreement_topk"]) <= 1.0
