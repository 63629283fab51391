import math

import pytest
import torch
from torch.testing import assert_close

from rlvr.algorithms.correction import mask_by_ratio, mismatch_metrics, truncated_is_weights

LN = math.log
# log(pi_old / pi_sampler) = [0, ln 3, -ln 4, (5: padding)] -> token ratios [1, 3, 0.25]
SAMPLER = torch.zeros(1, 4)
OLD = torch.tensor([[0.0, LN(3.0), -LN(4.0), 5.0]])
MASK = torch.tensor([[True, True, True, False]])


def test_token_level_truncation():
    # min(r, 2) = [1, 2, 0.25], padding -> 0
    w = truncated_is_weights(OLD, SAMPLER, MASK, cap=2.0)
    assert_close(w, torch.tensor([[1.0, 2.0, 0.25, 0.0]]))


def test_sequence_and_geometric_levels():
    # sequence: product 1*3*0.25 = 0.75 < 2 -> 0.75 on every valid token
    # geometric: 0.75^(1/3) = 0.9085603
    seq = truncated_is_weights(OLD, SAMPLER, MASK, level="sequence")
    geo = truncated_is_weights(OLD, SAMPLER, MASK, level="geometric")
    assert_close(seq, torch.tensor([[0.75, 0.75, 0.75, 0.0]]))
    assert_close(geo, torch.tensor([[0.9085603] * 3 + [0.0]]))


def test_long_sequence_product_does_not_overflow():
    # 1000 tokens with log ratio 0.1: product e^100 -> truncated to cap 2; geometric e^0.1 = 1.1051709
    old, sampler = torch.full((1, 1000), 0.1), torch.zeros(1, 1000)
    mask = torch.ones(1, 1000, dtype=torch.bool)
    assert_close(truncated_is_weights(old, sampler, mask, level="sequence"), torch.full((1, 1000), 2.0))
    assert_close(
        truncated_is_weights(old, sampler, mask, level="geometric"), torch.full((1, 1000), 1.1051709)
    )


def test_weights_are_detached():
    old = OLD.clone().requires_grad_()
    assert not truncated_is_weights(old, SAMPLER, MASK).requires_grad


def test_mask_by_ratio_token_and_sequence():
    # band [1/2, 2]: token ratios [1, 3, 0.25] -> keep only t0; padding stays False
    assert torch.equal(mask_by_ratio(OLD, SAMPLER, MASK), torch.tensor([[True, False, False, False]]))
    # sequence ratio 0.75 is inside -> keep every valid token; with low 0.8 (IcePop-style band) drop all
    assert torch.equal(mask_by_ratio(OLD, SAMPLER, MASK, level="sequence"), MASK)
    assert not mask_by_ratio(OLD, SAMPLER, MASK, level="sequence", low=0.8).any()
    with pytest.raises(ValueError, match="low"):
        mask_by_ratio(OLD, SAMPLER, MASK, cap=0.5)
    with pytest.raises(ValueError, match="level"):
        truncated_is_weights(OLD, SAMPLER, MASK, level="tok")


def test_mismatch_metrics_hand_values():
    # |diff| over valid tokens: (0 + 1.0986123 + 1.3862944)/3 = 0.8283022
    # max ratio 3 (padding's e^5 ignored); masked 2 of 3 -> 0.6666667
    # k3 = r - ln r - 1: [0, 3 - 1.0986123 - 1, 0.25 + 1.3862944 - 1] = [0, 0.9013877, 0.6362944] -> mean 0.5125607
    m = mismatch_metrics(OLD, SAMPLER, MASK)
    assert_close(m["mismatch/abs_logp_diff"], torch.tensor(0.8283022))
    assert_close(m["mismatch/max_ratio"], torch.tensor(3.0))
    assert_close(m["mismatch/masked_frac"], torch.tensor(2 / 3))
    assert_close(m["mismatch/kl"], torch.tensor(0.5125607))


def test_mismatch_metrics_with_no_valid_tokens_are_zero():
    m = mismatch_metrics(OLD, SAMPLER, torch.zeros(1, 4, dtype=torch.bool))
    assert all(v == 0 for v in m.values())
