"""Critic maths for PPO with a value model ("The N Implementation Details of RLHF with PPO",
Huang et al. 2024; Schulman et al. 2017): the clipped value loss, whitening, explained variance.

All tensors are `[B, T]` with a `loss_mask` (True where a token counts); losses are per token, to be
aggregated with the step's global denominator like every other term.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["explained_variance", "value_loss", "whiten"]


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, loss_mask: Tensor, *,
               clip: float | None) -> tuple[Tensor, dict[str, Tensor]]:  # fmt: skip
    """`0.5 * max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)` per token (PPO2's value clipping,
    as OpenAI's baselines and the N-details use it); `clip=None`: the plain squared error.
    Metric "value/clip_frac": tokens where the clipped branch is the larger (its gradient is zero)."""
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped, {"value/clip_frac": values.new_zeros(())}
    clipped_v = old_values + (values - old_values).clamp(-clip, clip)
    clipped = (clipped_v - returns) ** 2
    m = loss_mask.to(values.dtype)
    frac = ((clipped > unclipped).to(values.dtype) * m).sum() / m.sum().clamp_min(1.0)
    return 0.5 * torch.maximum(unclipped, clipped), {"value/clip_frac": frac.detach()}


def whiten(x: Tensor, loss_mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the valid tokens (mean kept when `shift_mean=False`, as for rewards); 0 elsewhere."""
    m = loss_mask.bool()
    vals = x[m]
    if vals.numel() < 2:
        return torch.where(m, x - vals.mean() if shift_mean and vals.numel() else x, torch.zeros_like(x))
    mean, std = vals.mean(), vals.std()
    out = (x - mean) / (std + eps)
    if not shift_mean:
        out = out + mean
    return torch.where(m, out, torch.zeros_like(x))


def explained_variance(values: Tensor, returns: Tensor, loss_mask: Tensor) -> float:
    """1 - Var[R - V] / Var[R] over valid tokens: 1 is a perfect critic, 0 no better than a constant."""
    m = loss_mask.bool()
    r, v = returns[m].double(), values[m].double()
    if r.numel() < 2 or float(r.var()) == 0.0:
        return float("nan")
    return float(1.0 - (r - v).var() / r.var())
