"""Loss aggregation with an explicit denominator.

Every mode is written as `numerator(per_token, loss_mask) / denominator`, where both are SUMS
over rows.  Sums split across micro-batches (and ranks), so if the trainer computes the
denominator once per optimizer step from all micro-batches (`global_denominator`) and passes it
to every `aggregate` call, then summing the micro-batch losses (gradient accumulation) gives
exactly the full-batch loss: 1 micro-batch x 8 steps == 8 x 1.  Passing no denominator gives
the local (single-batch) value.  This is the normalisation bug torchtune, verl and TRL have each
fixed at least once (see verl's `agg_loss`, prime-rl's loss normalisation).

Modes (Dr. GRPO, Liu et al. 2025, §3.1, discusses why they differ):
    token_mean               sum(loss*mask) / sum(mask)                 (DAPO's token-level loss)
    seq_mean_token_mean      sum_i[tokenmean_i(loss)] / num_seqs        (original GRPO)
    seq_mean_token_sum_norm  sum(loss*mask) / (num_seqs * max_len)      (Dr. GRPO; constant per step)

A sequence counts when it has at least one valid token; fully masked rows (padding rows, empty
completions) add 0 to both numerator and denominator, never NaN.  For distributed data parallel,
all-reduce (sum) the denominator across ranks and multiply the loss by world_size, because DDP
averages gradients.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = [
    "AGGREGATION_MODES",
    "aggregate",
    "global_denominator",
    "seq_mean_token_mean",
    "seq_mean_token_sum_norm",
    "token_mean",
]


def _check(per_token: Tensor, loss_mask: Tensor) -> Tensor:
    if per_token.shape != loss_mask.shape or per_token.dim() != 2:
        raise ValueError(
            f"per_token and loss_mask must both be [B, T], got {tuple(per_token.shape)} and {tuple(loss_mask.shape)}"
        )
    return loss_mask.to(per_token.dtype)


def _num_seqs(loss_mask: Tensor) -> Tensor:  # [B, T] -> scalar
    return loss_mask.bool().any(dim=-1).sum().to(torch.float32)


def _finish(numerator: Tensor, denominator: Tensor | float) -> Tensor:
    if not isinstance(denominator, Tensor):
        denominator = torch.tensor(float(denominator))
    d = denominator.to(device=numerator.device, dtype=numerator.dtype)
    return numerator / torch.where(d > 0, d, torch.ones_like(d))  # empty step: 0/1, not 0/0


def token_mean(
    per_token: Tensor,
    loss_mask: Tensor,
    *,
    denominator: Tensor | float | None = None,
    max_len: int | None = None,
) -> Tensor:
    """sum(loss*mask) / D, D = number of valid tokens (of the whole optimizer step when given)."""
    m = _check(per_token, loss_mask)
    numerator = (per_token * m).sum()
    return _finish(numerator, m.sum() if denominator is None else denominator)


def seq_mean_token_mean(
    per_token: Tensor,
    loss_mask: Tensor,
    *,
    denominator: Tensor | float | None = None,
    max_len: int | None = None,
) -> Tensor:
    """sum over sequences of each sequence's token mean / D, D = number of sequences with a valid token."""
    m = _check(per_token, loss_mask)
    seq = (per_token * m).sum(-1) / m.sum(-1).clamp_min(1.0)  # [B]; 0 for fully masked rows
    return _finish(seq.sum(), _num_seqs(loss_mask) if denominator is None else denominator)


def seq_mean_token_sum_norm(
    per_token: Tensor,
    loss_mask: Tensor,
    *,
    denominator: Tensor | float | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Dr. GRPO: sum(loss*mask) / D, D = num_seqs * max_len (max_len defaults to T; pass the
    generation budget so the constant does not depend on how a batch happened to be padded)."""
    m = _check(per_token, loss_mask)
    if denominator is None:
        denominator = _num_seqs(loss_mask) * (per_token.shape[-1] if max_len is None else max_len)
    return _finish((per_token * m).sum(), denominator)


AGGREGATION_MODES: dict[str, Callable[..., Tensor]] = {
    "token_mean": token_mean,
    "seq_mean_token_mean": seq_mean_token_mean,
    "seq_mean_token_sum_norm": seq_mean_token_sum_norm,
}


def aggregate(
    per_token: Tensor,  # [B, T]
    loss_mask: Tensor,  # [B, T]
    mode: str,
    *,
    denominator: Tensor | float | None = None,
    max_len: int | None = None,
) -> Tensor:  # scalar
    """Reduce a per-token loss to a scalar with one of AGGREGATION_MODES (see the module docstring).

    `denominator` (from `global_denominator`) makes the result a summable share of the
    optimizer step's loss; without it the batch is normalised by its own counts.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; choose one of {sorted(AGGREGATION_MODES)}")
    return AGGREGATION_MODES[mode](per_token, loss_mask, denominator=denominator, max_len=max_len)


def global_denominator(
    loss_masks: Sequence[Tensor],  # each [B_k, T_k]
    mode: str,
    max_len: int | None = None,
) -> Tensor:  # float32 scalar
    """The denominator of one optimizer step, from the loss masks of all its micro-batches.

    token_mean: total valid tokens; seq_mean_token_mean: total sequences with a valid token;
    seq_mean_token_sum_norm: that sequence count times `max_len` (default: the largest T among
    the masks; pass the generation budget).  Sum it across data-parallel ranks before use.
    """
    if mode not in AGGREGATION_MODES:
        raise ValueError(f"unknown aggregation mode {mode!r}; choose one of {sorted(AGGREGATION_MODES)}")
    if not loss_masks:
        raise ValueError("global_denominator needs at least one loss mask")
    if mode == "token_mean":
        counts = [m.to(torch.float32).sum() for m in loss_masks]
    else:
        counts = [_num_seqs(m) for m in loss_masks]
    total = torch.stack([c.to(loss_masks[0].device) for c in counts]).sum()
    if mode == "seq_mean_token_sum_norm":
        total = total * (max(m.shape[-1] for m in loss_masks) if max_len is None else max_len)
    return total
