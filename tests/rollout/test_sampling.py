"""On-device sampling helpers: hand-derived filters, greedy, logprob convention, frequencies."""

from __future__ import annotations

import math

import torch

from rlvr.rollout.sampling import sample_next, top_k_filter, top_p_filter

NEG = float("-inf")


def test_top_k_keeps_k_largest():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert top_k_filter(logits, 2).tolist() == [[NEG, 4.0, 3.0, NEG]]
    assert torch.equal(top_k_filter(logits, 0), logits)  # 0 = off


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    # sorted: 0.5, 0.3, 0.15, 0.05; mass before each: 0, 0.5, 0.8, 0.95
    kept = lambda p: torch.isfinite(top_p_filter(logits, p))[0].tolist()  # noqa: E731
    assert kept(0.8) == [False, True, False, True]  # 0.5 + 0.3 reaches 0.8: the 0.15 is not needed
    assert kept(0.81) == [False, True, True, True]
    assert kept(0.1) == [False, True, False, False]  # the top token is always kept


def test_greedy_is_argmax_with_t1_logprob():
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 0.0]])
    tok, lp = sample_next(logits, temperature=0.0)
    assert tok.tolist() == [1, 0]
    assert torch.allclose(lp, torch.tensor([math.log(0.75), -math.log1p(math.exp(-2.0))]))


def test_logprob_is_temperature_scaled_before_truncation():
    # logits [0, ln 3] at T = 0.5 -> scaled [0, 2 ln 3]: probs [1/10, 9/10]; top_k=1 keeps only token 1
    logits = torch.tensor([[0.0, math.log(3.0)]])
    tok, lp = sample_next(logits, temperature=0.5, top_k=1, generator=torch.Generator().manual_seed(0))
    assert tok.item() == 1 and math.isclose(lp.item(), math.log(0.9), rel_tol=1e-5)


def test_frequencies_follow_the_distribution_and_ban_is_respected():
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    logits = probs.log().expand(20000, 4)
    gen = torch.Generator().manual_seed(1)
    tok, _ = sample_next(logits, temperature=1.0, generator=gen)
    freq = torch.bincount(tok, minlength=4).float() / 20000
    assert torch.allclose(freq, probs, atol=0.015)  # binomial sd <= 0.0035
    tok, lp = sample_next(logits, temperature=1.0, generator=gen, banned=torch.tensor([3]))
    assert (tok != 3).all()
    assert torch.allclose(lp, probs.log()[tok])  # logprob of the unbanned distribution


def test_same_generator_seed_same_draws():
    logits = torch.randn(8, 50)
    a = sample_next(logits, temperature=0.8, top_p=0.9, generator=torch.Generator().manual_seed(3))
    b = sample_next(logits, temperature=0.8, top_p=0.9, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
