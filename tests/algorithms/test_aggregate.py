import pytest
import torch
from torch.testing import assert_close

from rlvr.algorithms.aggregate import AGGREGATION_MODES, aggregate, global_denominator

MODES = sorted(AGGREGATION_MODES)
LOSS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [9.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)  # row 2 fully masked


def test_hand_values():
    # valid tokens: row 0 -> 1, 2; row 1 -> 4; row 2 none (does not count as a sequence)
    #   token_mean              = (1 + 2 + 4) / 3         = 7/3
    #   seq_mean_token_mean     = (1.5 + 4) / 2           = 2.75
    #   seq_mean_token_sum_norm = 7 / (2 seqs * T=3)      = 7/6;  with max_len 10: 7/20
    assert_close(aggregate(LOSS, MASK, "token_mean"), torch.tensor(7 / 3))
    assert_close(aggregate(LOSS, MASK, "seq_mean_token_mean"), torch.tensor(2.75))
    assert_close(aggregate(LOSS, MASK, "seq_mean_token_sum_norm"), torch.tensor(7 / 6))
    assert_close(aggregate(LOSS, MASK, "seq_mean_token_sum_norm", max_len=10), torch.tensor(7 / 20))
    # an explicit denominator replaces the local count: token sum 7 / 14 = 0.5; seq sum 5.5 / 11 = 0.5
    assert_close(aggregate(LOSS, MASK, "token_mean", denominator=14.0), torch.tensor(0.5))
    assert_close(
        aggregate(LOSS, MASK, "seq_mean_token_mean", denominator=torch.tensor(11.0)), torch.tensor(0.5)
    )


def test_global_denominator_hand_values():
    # masks: MASK (3 tokens, 2 sequences) and [[1, 1, 1, 1]] (4 tokens, 1 sequence, T=4)
    masks = [MASK, torch.ones(1, 4, dtype=torch.bool)]
    assert_close(global_denominator(masks, "token_mean"), torch.tensor(7.0))
    assert_close(global_denominator(masks, "seq_mean_token_mean"), torch.tensor(3.0))
    assert_close(global_denominator(masks, "seq_mean_token_sum_norm"), torch.tensor(12.0))  # 3 seqs * max T 4
    assert_close(global_denominator(masks, "seq_mean_token_sum_norm", max_len=100), torch.tensor(300.0))


@pytest.mark.parametrize("mode", MODES)
def test_fully_masked_batch_is_zero_not_nan(mode):
    x = torch.randn(2, 3, requires_grad=True)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    out = aggregate(x, mask, mode)
    out.backward()
    assert out == 0 and torch.equal(x.grad, torch.zeros(2, 3))
    assert aggregate(x, mask, mode, denominator=global_denominator([mask], mode)) == 0


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    B, T = 8, 7
    lengths = torch.randint(0, T + 1, (B,), generator=g)  # 0 = an empty completion
    mask = torch.arange(T)[None, :] < lengths[:, None]
    return torch.randn(B, T, generator=g, dtype=torch.float64), mask, lengths


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("micro", [1, 2, 4])
def test_accumulation_invariance(mode, micro, seed):
    """1 micro-batch x 8 == 8 x 1 (and 4 x 2, 2 x 4): same loss sum, same gradient.

    Each micro-batch is trimmed to its own longest row, as a trainer that pads per micro-batch
    would do, so the micro-batches have different T; max_len pins Dr. GRPO's constant.
    """
    per_token, mask, lengths = _batch(seed)
    full = per_token.clone().requires_grad_()
    want = aggregate(full, mask, mode, max_len=7)
    want.backward()

    parts = per_token.clone().requires_grad_()
    chunks = [slice(i, i + micro) for i in range(0, 8, micro)]
    masks = [mask[s, : max(1, int(lengths[s].max()))] for s in chunks]
    denom = global_denominator(masks, mode, max_len=7)
    got = sum(aggregate(parts[s, : m.shape[1]], m, mode, denominator=denom) for s, m in zip(chunks, masks))
    got.backward()
    assert_close(got, want)
    assert_close(parts.grad, full.grad)


def test_errors_name_the_choices():
    with pytest.raises(ValueError, match="token_mean"):
        aggregate(LOSS, MASK, "mean")
    with pytest.raises(ValueError, match="seq_mean_token_mean"):
        global_denominator([MASK], "sum")
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        aggregate(LOSS, MASK[:, :2], "token_mean")
