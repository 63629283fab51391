"""Policy-gradient objectives: per-token losses to MINIMISE, plus detached metrics.

Hyper-parameters without a default here are required: their defaults live once, on the config
section of the objective (`rlvr.config.parts`), which binds them.  `ppo_clip` keeps its 0.2 / 0.2
defaults because DESIGN.md's contract names them.

Every objective takes `logprobs [B, T]` (current policy, with grad), `advantages` `[B]`
(per sequence, broadcast over tokens) or `[B, T]`, and keyword hyper-parameters, and returns
`(loss [B, T], metrics)`.  Call them with keywords (`fn(logprobs=..., old_logprobs=...,
advantages=..., loss_mask=..., **hyper)`) so the trainer can treat them uniformly.  Masking and
normalisation are NOT done here: pass the loss to `aggregate.aggregate` with an explicit denominator.

`metrics` maps the shared metric keys ("clip/low_frac", "clip/high_frac", "clip/frac",
"ratio/mean", "ratio/max") to detached 0-dim tensors, averaged over the valid tokens when
`loss_mask` is given (over every position otherwise).  They are per-micro-batch token means;
the trainer averages them across micro-batches for logging.

Log-ratios are clamped to [-20, 20] before exp (as verl does) so a wild token cannot overflow;
inside that range, which any sane update stays in, the gradient is exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["cispo", "gspo", "ppo_clip", "reinforce"]

_LOG_RATIO_CLAMP = 20.0


def _per_token(advantages: Tensor, like: Tensor) -> Tensor:  # [B] or [B, T] -> [B, T]
    if advantages.dim() == 1 and advantages.shape[0] == like.shape[0]:
        return advantages.unsqueeze(-1).expand_as(like)
    if advantages.shape == like.shape:
        return advantages
    raise ValueError(
        f"advantages must be [B] or [B, T] matching logprobs {tuple(like.shape)}, got {tuple(advantages.shape)}"
    )


def _masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    if mask is None:
        return x.float().mean()
    m = mask.to(torch.float32)
    return (x.float() * m).sum() / m.sum().clamp_min(1.0)


def _ratio_metrics(ratio: Tensor, low: Tensor, high: Tensor, loss_mask: Tensor | None) -> dict[str, Tensor]:
    """Clip fractions and ratio statistics, detached.  `low`/`high`: where the clipped branch is active."""
    ratio, valid = ratio.detach(), (None if loss_mask is None else loss_mask.bool())
    ratio_max = ratio if valid is None else torch.where(valid, ratio, torch.zeros_like(ratio))
    return {
        "clip/low_frac": _masked_mean(low, valid),
        "clip/high_frac": _masked_mean(high, valid),
        "clip/frac": _masked_mean(low | high, valid),
        "ratio/mean": _masked_mean(ratio, valid),
        "ratio/max": ratio_max.max() if ratio_max.numel() else ratio.new_zeros(()),
    }


def ppo_clip(
    logprobs: Tensor,  # [B, T]
    old_logprobs: Tensor,  # [B, T]
    advantages: Tensor,  # [B] or [B, T]
    *,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    dual_clip: float | None = None,
    loss_mask: Tensor | None = None,  # [B, T]; used for metrics only
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017), as GRPO uses it per token (DeepSeekMath eq. 3).

    `loss = max(-A*r, -A*clip(r, 1-clip_low, 1+clip_high))` with `r = exp(logp - old)`.
    Decoupled `clip_low`/`clip_high` is DAPO's clip-higher (Yu et al. 2025; e.g. 0.2/0.28).
    `dual_clip=c` (c > 1; Ye et al. 2020, "Mastering Complex Control in MOBA Games") additionally
    bounds the loss of negative-advantage tokens by `-c*A`, so a huge ratio on a bad token cannot
    dominate the update; the metric "clip/dual_frac" reports how often it binds.
    "clip/low_frac" counts tokens with A < 0 and r < 1-clip_low, "clip/high_frac" tokens with
    A > 0 and r > 1+clip_high: exactly where the clip zeroes the gradient.
    """
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1 (typically 3.0), got {dual_clip}")
    adv = _per_token(advantages, logprobs)
    ratio = torch.exp((logprobs - old_logprobs).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    unclipped = -adv * ratio
    clipped = -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(unclipped, clipped)
    low = (adv < 0) & (ratio < 1.0 - clip_low)
    high = (adv > 0) & (ratio > 1.0 + clip_high)
    metrics = _ratio_metrics(ratio, low, high, loss_mask)
    if dual_clip is not None:
        bound = -adv * dual_clip
        dual = (adv < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
        metrics["clip/dual_frac"] = _masked_mean(dual, None if loss_mask is None else loss_mask.bool())
    return loss, metrics


def gspo(
    logprobs: Tensor,  # [B, T]
    old_logprobs: Tensor,  # [B, T]
    advantages: Tensor,  # [B] or [B, T]
    *,
    loss_mask: Tensor,  # [B, T]
    clip_low: float,  # the paper's 3e-4 / 4e-4 are the defaults of the config's GSPO section
    clip_high: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv:2507.18071), GSPO-token form.

    Sequence ratio `s_i = exp(mean_{valid t}(logp - old))` (length-normalised), and per token
    `s_it = sg[s_i] * pi_t / sg[pi_t]`, whose value is `s_i` and whose gradient is `s_i * grad logp_t`;
    then PPO-style clipping of `s_it` to [1-clip_low, 1+clip_high] (paper defaults 3e-4 / 4e-4).
    With `[B]` advantages and the "seq_mean_token_mean" aggregation this is exactly the paper's
    sequence-level objective (a test checks the gradients); "token_mean" would weight sequences
    by length.  `loss_mask` is required: padding must not enter the sequence ratio.
    Metrics are per sequence (a clipped sequence counts once), over sequences with a valid token.
    """
    mask = loss_mask.to(logprobs.dtype)
    adv = _per_token(advantages, logprobs)
    log_ratio = (logprobs - old_logprobs) * mask
    seq_log_ratio = log_ratio.sum(-1) / mask.sum(-1).clamp_min(1.0)  # [B]
    seq_log_ratio = seq_log_ratio.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)
    token_log_ratio = seq_log_ratio.detach().unsqueeze(-1) + logprobs - logprobs.detach()
    ratio = torch.exp(token_log_ratio)  # value s_i at every token
    loss = torch.maximum(-adv * ratio, -adv * ratio.clamp(1.0 - clip_low, 1.0 + clip_high))
    seq_ratio = torch.exp(seq_log_ratio.detach())  # [B]
    seq_adv = adv.detach().sum(-1) / mask.sum(-1).clamp_min(1.0) if adv.dim() == 2 else adv
    has_token = loss_mask.bool().any(-1)
    low = (seq_adv < 0) & (seq_ratio < 1.0 - clip_low)
    high = (seq_adv > 0) & (seq_ratio > 1.0 + clip_high)
    return loss, _ratio_metrics(seq_ratio, low, high, has_token)


def cispo(
    logprobs: Tensor,  # [B, T]
    old_logprobs: Tensor,  # [B, T]
    advantages: Tensor,  # [B] or [B, T]
    *,
    clip_low: float | None,  # None: no lower bound (the config's CISPO section default)
    clip_high: float,
    loss_mask: Tensor | None = None,  # [B, T]; used for metrics only
) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO (MiniMax 2025, "MiniMax-M1", arXiv:2506.13585, eq. 4): `-sg[clip(r)] * A * logp`.

    Clips the importance weight instead of the update, so every token keeps a gradient
    (PPO's clip zeroes the gradient of clipped tokens, which can drop rare "fork" tokens).
    `clip_low=None` means no lower bound, as the paper sets eps_low large and tunes only eps_high.
    The loss value is not a surrogate whose numerical derivative is the update: the weight is
    detached by design.  "clip/low_frac"/"clip/high_frac" count tokens whose weight was truncated.
    """
    adv = _per_token(advantages, logprobs)
    ratio = torch.exp((logprobs - old_logprobs).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)).detach()
    lo = 0.0 if clip_low is None else 1.0 - clip_low
    weight = ratio.clamp(lo, 1.0 + clip_high)
    loss = -weight * adv * logprobs
    return loss, _ratio_metrics(ratio, ratio < lo, ratio > 1.0 + clip_high, loss_mask)


def reinforce(
    logprobs: Tensor,  # [B, T]
    advantages: Tensor,  # [B] or [B, T]
    *,
    old_logprobs: Tensor | None = None,  # [B, T]; only for ratio metrics
    loss_mask: Tensor | None = None,  # [B, T]; used for metrics only
) -> tuple[Tensor, dict[str, Tensor]]:
    """Vanilla policy gradient (Williams 1992, REINFORCE): `loss = -A * logp`.

    Correct only on-policy (one optimiser step per batch); use `ppo_clip` for several.  Returns the
    ratio metrics (no clipping, so clip fractions are 0) when `old_logprobs` is given, else none.
    """
    adv = _per_token(advantages, logprobs)
    loss = -adv * logprobs
    if old_logprobs is None:
        return loss, {}
    ratio = torch.exp((logprobs - old_logprobs).clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP))
    never = torch.zeros_like(ratio, dtype=torch.bool)
    return loss, _ratio_metrics(ratio, never, never, loss_mask)
