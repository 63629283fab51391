import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.algorithms.logprobs import (
    entropy,
    entropy_from_hidden,
    entropy_from_logits,
    gathered_logprobs_from_hidden,
    logprobs_and_entropy,
    logprobs_and_entropy_from_hidden,
    token_logprobs,
    token_logprobs_from_hidden,
)


def _naive(logits, targets, temperature=1.0):
    logp = torch.log_softmax(logits.double() / temperature, dim=-1)
    return logp.gather(-1, targets[..., None])[..., 0], -(logp.exp() * logp).sum(-1)


def test_hand_values():
    # logits [0, ln 3] -> p = [1/4, 3/4]; target 1: ln(3/4) = -0.2876821
    # entropy = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.3465736 + 0.2157616 = 0.5623351
    # temperature 2: logits [0, ln 3 / 2] -> p = [1/(1+sqrt 3), sqrt 3/(1+sqrt 3)] = [0.3660254, 0.6339746]
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    target = torch.tensor([[1]])
    assert_close(token_logprobs(logits, target), torch.tensor([[-0.2876821]]))
    assert_close(entropy(logits), torch.tensor([[0.5623351]]))
    assert_close(token_logprobs(logits, target, temperature=2.0), torch.tensor([[math.log(0.6339746)]]))


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 1000])
def test_chunked_equals_naive(chunk_size):
    g = torch.Generator().manual_seed(chunk_size)
    logits = torch.randn(3, 5, 11, generator=g) * 3
    targets = torch.randint(0, 11, (3, 5), generator=g)
    lp, ent = logprobs_and_entropy(logits, targets, chunk_size=chunk_size, temperature=0.7)
    want_lp, want_ent = _naive(logits, targets, 0.7)
    assert lp.dtype == torch.float32
    assert_close(lp.double(), want_lp, atol=1e-5, rtol=1e-5)
    assert_close(ent.double(), want_ent, atol=1e-5, rtol=1e-5)
    assert_close(entropy_from_logits(logits, chunk_size=chunk_size, temperature=0.7), ent)


def test_non_contiguous_logits_and_bf16_input():
    # model logits are [B, T+1, V]; the shifted slice [:, :-1] is not viewable as [B*T, V]
    g = torch.Generator().manual_seed(0)
    full = torch.randn(2, 6, 13, generator=g).bfloat16()
    targets = torch.randint(0, 13, (2, 5), generator=g)
    lp = token_logprobs(full[:, :-1], targets, chunk_size=4)
    assert lp.dtype == torch.float32  # computed in fp32 even from bf16
    assert_close(lp.double(), _naive(full[:, :-1].float(), targets)[0], atol=1e-5, rtol=1e-5)


def test_gradients_match_naive():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 9, generator=g, dtype=torch.float64)
    targets = torch.randint(0, 9, (2, 4), generator=g)
    w_lp, w_ent = (
        torch.randn(2, 4, generator=g, dtype=torch.float64),
        torch.randn(2, 4, generator=g, dtype=torch.float64),
    )
    a, b = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    lp, ent = logprobs_and_entropy(a, targets, chunk_size=3, temperature=1.3)
    ((lp * w_lp).sum() + (ent * w_ent).sum()).backward()
    n_lp, n_ent = _naive(b, targets, 1.3)
    ((n_lp * w_lp).sum() + (n_ent * w_ent).sum()).backward()
    assert_close(a.grad, b.grad)


def test_gradcheck_from_logits():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 7, (2, 3), generator=g)
    fn = lambda x: logprobs_and_entropy(x, targets, chunk_size=2, temperature=0.8)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (logits,))
    assert torch.autograd.gradcheck(lambda x: entropy_from_logits(x[:, :-1], chunk_size=4), (logits,))


def test_from_hidden_equals_naive_and_gradchecks():
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 5, 4, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 9, (2, 5), generator=g)
    lp, ent = logprobs_and_entropy_from_hidden(hidden, weight, targets, chunk_size=3, temperature=0.9)
    want_lp, want_ent = _naive(hidden @ weight.t(), targets, 0.9)
    assert_close(lp, want_lp)
    assert_close(ent, want_ent)
    # the entropy-free path (SFT's) gives the same logprobs
    assert_close(token_logprobs_from_hidden(hidden, weight, targets, chunk_size=4, temperature=0.9), want_lp)
    fn = lambda h, w: logprobs_and_entropy_from_hidden(h, w, targets, chunk_size=3, temperature=0.9)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (hidden, weight))
    assert torch.autograd.gradcheck(
        lambda h, w: token_logprobs_from_hidden(h, w, targets, chunk_size=4), (hidden, weight)
    )
    assert torch.autograd.gradcheck(lambda h, w: entropy_from_hidden(h, w, chunk_size=7), (hidden, weight))


def test_from_hidden_with_frozen_head_and_no_grad():
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(1, 3, 4, generator=g, requires_grad=True)
    weight = torch.randn(6, 4, generator=g)  # frozen head: no grad requested
    targets = torch.randint(0, 6, (1, 3), generator=g)
    token_logprobs_from_hidden(hidden, weight, targets, chunk_size=2).sum().backward()
    assert hidden.grad is not None and weight.grad is None
    with torch.no_grad():
        assert not entropy_from_hidden(hidden, weight).requires_grad


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="logits"):
        entropy(torch.zeros(3, 5))


def test_gathered_from_hidden_hand_values():
    # one token, hidden [1, 0], weight rows [0, ln 3, 0] -> logits [0, ln 3, 0] -> p = [1/5, 3/5, 1/5]
    hidden = torch.tensor([[[1.0, 0.0]]])
    weight = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    lp, top = gathered_logprobs_from_hidden(hidden, weight, torch.tensor([[[1, 0, 1]]]))
    assert_close(lp, torch.tensor([[[math.log(0.6), math.log(0.2), math.log(0.6)]]]))
    assert top.tolist() == [[1]]


@pytest.mark.parametrize("chunk_size", [1, 3, 1000])
def test_gathered_from_hidden_equals_the_full_log_softmax_in_value_and_gradient(chunk_size):
    """The distillation student's target + top-k logprobs: several ids per token, repeats included (the
    target is often the teacher's top-1), chunked over tokens; gradients in both hidden and weight."""
    g = torch.Generator().manual_seed(5)
    hidden = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    weight = torch.randn(9, 4, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 9, (2, 5, 4), generator=g)
    ids[0, :, 1] = ids[0, :, 0]  # repeated candidates: their gradients add up
    upstream = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    h1, w1 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    lp, top = gathered_logprobs_from_hidden(h1, w1, ids, chunk_size=chunk_size, temperature=0.7)
    (lp * upstream).sum().backward()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    full = torch.log_softmax((h2 @ w2.t()) / 0.7, dim=-1)  # [B, T, V]
    want = full.gather(-1, ids)
    (want * upstream).sum().backward()
    assert_close(lp, want)
    assert torch.equal(top, full.argmax(-1))
    assert_close(h1.grad, h2.grad)
    assert_close(w1.grad, w2.grad)
    fn = lambda h, w: gathered_logprobs_from_hidden(h, w, ids, chunk_size=chunk_size)[0]  # noqa: E731
    assert torch.autograd.gradcheck(fn, (h1.detach().requires_grad_(), w1.detach().requires_grad_()))


def test_gathered_from_hidden_shape_error_names_the_ids():
    with pytest.raises(ValueError, match="ids must be"):
        gathered_logprobs_from_hidden(torch.zeros(2, 3, 4), torch.zeros(5, 4), torch.zeros(2, 3, dtype=torch.long))
