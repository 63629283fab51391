import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.algorithms.aggregate import aggregate
from rlvr.algorithms.objectives import cispo, gspo, ppo_clip, reinforce
from rlvr.algorithms.registry import OBJECTIVES
from rlvr.config import parse_config

LN = math.log


def _leaf(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype, requires_grad=True)


# ------------------------------------------------------------------------------------------ ppo_clip
def test_ppo_clip_hand_values_and_gradient():
    # ratios r = [1.0, 1.5, 0.5, 1.1], A = [1, 1, -1, -1], clip 0.2/0.2 -> band [0.8, 1.2]
    #   t0: max(-1*1.0, -1*1.0)   = -1.0   unclipped, grad -A*r = -1.0
    #   t1: max(-1*1.5, -1*1.2)   = -1.2   high clip active (A>0, r>1.2), grad 0
    #   t2: max(+0.5,   +0.8)     =  0.8   low clip active (A<0, r<0.8), grad 0
    #   t3: max(+1.1,   +1.1)     =  1.1   inside the band, grad -A*r = +1.1
    old = torch.zeros(1, 4)
    logp = _leaf([[0.0, LN(1.5), LN(0.5), LN(1.1)]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, m = ppo_clip(logp, old, adv)
    assert_close(loss, torch.tensor([[-1.0, -1.2, 0.8, 1.1]]))
    loss.sum().backward()
    assert_close(logp.grad, torch.tensor([[-1.0, 0.0, 0.0, 1.1]]))
    # metrics over 4 tokens: one low, one high; ratio mean (1 + 1.5 + 0.5 + 1.1)/4 = 1.025
    assert_close(m["clip/low_frac"], torch.tensor(0.25))
    assert_close(m["clip/high_frac"], torch.tensor(0.25))
    assert_close(m["clip/frac"], torch.tensor(0.5))
    assert_close(m["ratio/mean"], torch.tensor(1.025))
    assert_close(m["ratio/max"], torch.tensor(1.5))
    assert all(not v.requires_grad for v in m.values())


def test_ppo_clip_metrics_respect_loss_mask():
    # masking t1 leaves r = [1.0, 0.5, 1.1]: low 1/3, high 0, mean 2.6/3, max 1.1
    logp = torch.tensor([[0.0, LN(1.5), LN(0.5), LN(1.1)]])
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    mask = torch.tensor([[True, False, True, True]])
    _, m = ppo_clip(logp, torch.zeros(1, 4), adv, loss_mask=mask)
    assert_close(m["clip/low_frac"], torch.tensor(1 / 3))
    assert_close(m["clip/high_frac"], torch.tensor(0.0))
    assert_close(m["ratio/mean"], torch.tensor(2.6 / 3))
    assert_close(m["ratio/max"], torch.tensor(1.1))


def test_ppo_clip_higher_decouples_bounds():
    # DAPO clip-higher: clip_high 0.6 -> r = 1.5 with A = 1 is inside [0.8, 1.6]: loss -1.5, grad -1.5
    logp = _leaf([[LN(1.5)]])
    loss, m = ppo_clip(logp, torch.zeros(1, 1), torch.tensor([1.0]), clip_high=0.6)
    loss.sum().backward()
    assert_close(loss, torch.tensor([[-1.5]]))
    assert_close(logp.grad, torch.tensor([[-1.5]]))
    assert m["clip/frac"] == 0


def test_ppo_clip_ratios_far_outside_the_band():
    # r = e^10 ~ 22026 with A = +1: clipped to -1.2, no gradient;
    # with A = -1 the pessimistic max keeps the unclipped +22026 (PPO's known weakness) ...
    logp = _leaf([[10.0, 10.0]])
    loss, _ = ppo_clip(logp, torch.zeros(1, 2), torch.tensor([[1.0, -1.0]]))
    assert_close(loss, torch.tensor([[-1.2, math.exp(10.0)]]))
    loss.sum().backward()
    assert_close(logp.grad, torch.tensor([[0.0, math.exp(10.0)]]))
    # ... and a log ratio of 1000 is clamped at 20 instead of overflowing to inf
    loss, m = ppo_clip(torch.tensor([[1000.0]]), torch.zeros(1, 1), torch.tensor([-1.0]))
    assert torch.isfinite(loss).all() and torch.isfinite(m["ratio/max"])


def test_dual_clip_bounds_negative_advantages():
    # dual_clip c = 3: A = -1, r = 5 -> max(5, 1.2) = 5 > 3 -> loss -A*c = 3, grad 0
    # A = -1, r = 2 -> 2 < 3 -> unchanged, grad -A*r = 2;  A = +1, r = 5 -> -1.2 (dual clip ignores A > 0)
    logp = _leaf([[LN(5.0), LN(2.0), LN(5.0)]])
    adv = torch.tensor([[-1.0, -1.0, 1.0]])
    loss, m = ppo_clip(logp, torch.zeros(1, 3), adv, dual_clip=3.0)
    assert_close(loss, torch.tensor([[3.0, 2.0, -1.2]]))
    loss.sum().backward()
    assert_close(logp.grad, torch.tensor([[0.0, 2.0, 0.0]]))
    assert_close(m["clip/dual_frac"], torch.tensor(1 / 3))
    with pytest.raises(ValueError, match="dual_clip"):
        ppo_clip(logp, torch.zeros(1, 3), adv, dual_clip=0.5)


def test_sequence_advantages_broadcast_like_token_advantages():
    g = torch.Generator().manual_seed(0)
    logp, old = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    adv = torch.randn(3, generator=g)
    for fn, kw in ((ppo_clip, {}), (cispo, {"clip_low": None, "clip_high": 0.2})):
        assert_close(fn(logp, old, adv, **kw)[0], fn(logp, old, adv[:, None].expand(3, 5), **kw)[0])
    with pytest.raises(ValueError, match="advantages"):
        ppo_clip(logp, old, torch.zeros(5))


def test_ppo_clip_gradcheck():
    g = torch.Generator().manual_seed(1)
    old = torch.randn(3, 4, generator=g, dtype=torch.float64)
    logp = (old + 0.4 * torch.randn(3, 4, generator=g, dtype=torch.float64)).requires_grad_()
    adv = torch.randn(3, 4, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: ppo_clip(x, old, adv, clip_high=0.28, dual_clip=3.0)[0], (logp,)
    )


# ------------------------------------------------------------------------------------------ gspo
def test_gspo_hand_values():
    # row 0: mask [1, 1, 0], logp - old = [0.1, 0.3, 5.0 (padding)] -> s0 = exp(0.2) = 1.2214028
    #        A = +1, band [0.8, 1.2] -> clipped: loss -1.2 at every token, no gradient
    # row 1: logp - old = 0 -> s1 = 1, A = -1 -> loss +1, grad -A*s1 = +1 per token
    # metrics per sequence: high 1/2, low 0, ratio mean (1.2214028 + 1)/2 = 1.1107014, max 1.2214028
    old = torch.zeros(2, 3)
    logp = _leaf([[0.1, 0.3, 5.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    loss, m = gspo(logp, old, torch.tensor([1.0, -1.0]), loss_mask=mask, clip_low=0.2, clip_high=0.2)
    assert_close(loss[0, :2], torch.tensor([-1.2, -1.2]))
    assert_close(loss[1], torch.ones(3))
    (loss * mask).sum().backward()
    assert_close(logp.grad, torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]))
    assert_close(m["clip/high_frac"], torch.tensor(0.5))
    assert_close(m["clip/low_frac"], torch.tensor(0.0))
    assert_close(m["ratio/mean"], torch.tensor(1.1107014))
    assert_close(m["ratio/max"], torch.tensor(1.2214028))


def _gspo_sequence_form(logp, old, adv, mask, lo, hi):
    """The paper's objective, literally: mean_i max(-A_i s_i, -A_i clip(s_i)), s_i = exp(mean_t(logp - old))."""
    m = mask.to(logp.dtype)
    s = torch.exp(((logp - old) * m).sum(-1) / m.sum(-1))
    return torch.maximum(-adv * s, -adv * s.clamp(1 - lo, 1 + hi)).mean()


def test_gspo_token_form_has_the_sequence_objective_gradient():
    # with [B] advantages and seq_mean_token_mean, GSPO-token == GSPO (paper §4.3): value and gradient
    g = torch.Generator().manual_seed(2)
    old = torch.randn(4, 6, generator=g, dtype=torch.float64)
    base = old + 0.1 * torch.randn(4, 6, generator=g, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=g) < 0.7
    mask[:, 0] = True
    adv = torch.randn(4, generator=g, dtype=torch.float64)
    x1, x2 = base.clone().requires_grad_(), base.clone().requires_grad_()
    ours = aggregate(
        gspo(x1, old, adv, loss_mask=mask, clip_low=0.05, clip_high=0.05)[0], mask, "seq_mean_token_mean"
    )
    paper = _gspo_sequence_form(x2, old, adv, mask, 0.05, 0.05)
    ours.backward(), paper.backward()
    assert_close(ours, paper)
    assert_close(x1.grad, x2.grad)
    # the same composition passes a numerical gradient check (detach tricks do not fool it)
    fn = lambda x: aggregate(gspo(x, old, adv, loss_mask=mask, clip_low=3e-4, clip_high=4e-4)[0], mask, "seq_mean_token_mean")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (old.clone().requires_grad_(),))


# ------------------------------------------------------------------------------------------ cispo
def test_cispo_hand_values():
    # r = [1.0, 1.5, 0.5], A = [2, 2, -1], logp = [-1, -2, -0.5], clip_high 0.2, no lower bound
    #   weights sg[clip(r)] = [1.0, 1.2, 0.5]
    #   loss = -w*A*logp = [-(1*2*-1), -(1.2*2*-2), -(0.5*-1*-0.5)] = [2.0, 4.8, -0.25]
    #   grad = -w*A = [-2.0, -2.4, 0.5]   (every token keeps a gradient, even the truncated one)
    logp = _leaf([[-1.0, -2.0, -0.5]])
    old = torch.tensor([[-1.0, -2.0 - LN(1.5), -0.5 - LN(0.5)]])
    loss, m = cispo(logp, old, torch.tensor([[2.0, 2.0, -1.0]]), clip_low=None, clip_high=0.2)
    assert_close(loss, torch.tensor([[2.0, 4.8, -0.25]]))
    loss.sum().backward()
    assert_close(logp.grad, torch.tensor([[-2.0, -2.4, 0.5]]))
    assert_close(m["clip/high_frac"], torch.tensor(1 / 3))
    assert_close(m["clip/low_frac"], torch.tensor(0.0))
    # with clip_low 0.2 the r = 0.5 weight becomes 0.8: loss -(0.8*-1*-0.5) = -0.4, low_frac 1/3
    loss, m = cispo(logp.detach(), old, torch.tensor([[2.0, 2.0, -1.0]]), clip_low=0.2, clip_high=0.2)
    assert_close(loss[0, 2], torch.tensor(-0.4))
    assert_close(m["clip/low_frac"], torch.tensor(1 / 3))


def test_cispo_gradcheck_where_weights_are_truncated():
    # the weight is detached by design, so a numerical check only matches where it is locally
    # constant: all ratios above 1 + clip_high (r >= e^0.5 = 1.65 > 1.2)
    g = torch.Generator().manual_seed(3)
    old = torch.randn(2, 5, generator=g, dtype=torch.float64)
    logp = (old + 0.5 + torch.rand(2, 5, generator=g, dtype=torch.float64)).requires_grad_()
    adv = torch.randn(2, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: cispo(x, old, adv, clip_low=None, clip_high=0.2)[0], (logp,))


# ------------------------------------------------------------------------------------------ reinforce
def test_reinforce_hand_values_and_gradcheck():
    # loss = -A*logp: A = [1, -2], logp = [[-1, -2], [-0.5, -3]] -> [[1, 2], [-1, -6]]
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -3.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([1.0, -2.0], dtype=torch.float64)
    loss, m = reinforce(logp, adv)
    assert_close(loss, torch.tensor([[1.0, 2.0], [-1.0, -6.0]], dtype=torch.float64))
    assert m == {}
    assert torch.autograd.gradcheck(lambda x: reinforce(x, adv)[0], (logp,))
    _, m = reinforce(logp, adv, old_logprobs=logp.detach())
    assert m["clip/frac"] == 0 and m["ratio/mean"] == 1


# ------------------------------------------------------------------------------------------ uniform calls
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_accepts_the_keyword_convention(name):
    g = torch.Generator().manual_seed(4)
    logp = torch.randn(2, 3, generator=g, requires_grad=True)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)  # includes a fully masked row
    settings = parse_config({"task": {"name": "sort"}, "algorithm": {"objective": name}}).algorithm.objective.settings()
    loss, metrics = OBJECTIVES[name](  # with the settings its config section holds
        logprobs=logp, old_logprobs=logp.detach() + 0.1, advantages=torch.tensor([1.0, -1.0]), loss_mask=mask,
        **settings,
    )
    assert loss.shape == (2, 3) and loss.requires_grad
    assert all(v.dim() == 0 and not v.requires_grad and torch.isfinite(v) for v in metrics.values())
    assert {"clip/frac", "ratio/mean", "ratio/max"} <= metrics.keys()
