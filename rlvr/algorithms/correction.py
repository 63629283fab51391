"""Sampler/trainer mismatch: measure it and correct it with importance sampling.

A fast rollout engine (vLLM, SGLang, or just bf16 kernels different from the trainer's) does not
sample from exactly the policy the trainer differentiates: `sampler_logprobs` (the engine's) differ
from `old_logprobs` (the trainer's recomputation for the same weights).  Training on those samples
is silently off-policy.  The corrections weight each token by `rho = pi_old / pi_sampler`:

- truncated IS (TIS): multiply the per-token loss by `min(rho, C)`; Yao, Liu et al. 2025, "Your
  Efficient RL Framework Secretly Brings You Off-Policy RL Training" (fengyao.notion.site blog,
  token level, C = 2);
- masked IS (MIS) / IcePop: drop tokens (or whole sequences) whose ratio leaves [1/C, C] instead of
  reweighting them; Liu, Yao et al. 2025, "When Speed Kills Stability: Demystifying RL Collapse
  from the Training-Inference Mismatch"; Ling Team 2025, "IcePop" (Ring-1T, two-sided token masking).

Levels: "token" uses each token's ratio; "sequence" the product over the sequence (the unbiased
sequence weight; explodes on long sequences); "geometric" the per-token geometric mean
`exp(mean log rho)` (length-normalised, as GSPO normalises its ratio).  Everything here is
detached: these are weights on the loss, not part of the policy gradient.

Use: `loss = objective(...)[0] * truncated_is_weights(...)`, or pass `mask_by_ratio(...)` as the
loss mask for aggregation (then compute the global denominator from the *new* masks, or keep the
old masks' denominator so dropped tokens still count; keeping it is the conservative choice).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LEVELS", "mask_by_ratio", "mismatch_metrics", "truncated_is_weights"]

LEVELS = ("token", "sequence", "geometric")
_LOG_CLAMP = 20.0


def _log_ratio(old_logprobs: Tensor, sampler_logprobs: Tensor, loss_mask: Tensor, level: str) -> Tensor:
    """log(pi_old / pi_sampler) at the requested level, broadcast to [B, T]; 0 at masked tokens."""
    if level not in LEVELS:
        raise ValueError(f"unknown importance-sampling level {level!r}; choose one of {LEVELS}")
    mask = loss_mask.bool()
    diff = torch.where(mask, (old_logprobs - sampler_logprobs).detach().float(), 0.0)
    if level == "token":
        return diff
    per_seq = diff.sum(-1)
    if level == "geometric":
        per_seq = per_seq / mask.sum(-1).clamp_min(1)
    return per_seq.unsqueeze(-1).expand_as(diff)


def truncated_is_weights(
    old_logprobs: Tensor,  # [B, T]
    sampler_logprobs: Tensor,  # [B, T]
    loss_mask: Tensor,  # [B, T]
    *,
    level: str = "token",
    cap: float = 2.0,
) -> Tensor:  # [B, T] float32, detached; 0 at masked tokens
    """Truncated importance weights `min(pi_old / pi_sampler, cap)` (Yao et al. 2025, TIS).

    Computed as `exp(min(log rho, log cap))`, so a sequence-level product of thousands of tokens
    cannot overflow.  Multiply the per-token loss by them before aggregation.
    """
    if cap <= 0:
        raise ValueError(f"cap must be > 0 (the paper uses 2.0), got {cap}")
    log_rho = _log_ratio(old_logprobs, sampler_logprobs, loss_mask, level)
    weights = torch.exp(log_rho.clamp(max=math.log(cap)))
    return torch.where(loss_mask.bool(), weights, torch.zeros_like(weights))


def mask_by_ratio(
    old_logprobs: Tensor,  # [B, T]
    sampler_logprobs: Tensor,  # [B, T]
    loss_mask: Tensor,  # [B, T]
    *,
    level: str = "token",
    cap: float = 2.0,
    low: float | None = None,
) -> Tensor:  # [B, T] bool
    """Masked importance sampling (MIS / IcePop): keep a token only if its ratio lies in [low, cap].

    `low` defaults to `1/cap` (the symmetric band in log space).  Returns the new loss mask:
    `loss_mask` with out-of-band tokens (or, at sequence levels, whole sequences) set to False.
    """
    low = 1.0 / cap if low is None else low
    if not 0 < low <= 1 <= cap:
        raise ValueError(f"need 0 < low <= 1 <= cap for ratio masking, got low={low}, cap={cap}")
    log_rho = _log_ratio(old_logprobs, sampler_logprobs, loss_mask, level)
    inside = (log_rho >= math.log(low)) & (log_rho <= math.log(cap))
    return loss_mask.bool() & inside


def mismatch_metrics(
    old_logprobs: Tensor,  # [B, T]
    sampler_logprobs: Tensor,  # [B, T]
    loss_mask: Tensor,  # [B, T]
    *,
    cap: float = 2.0,
    level: str = "token",
) -> dict[str, Tensor]:
    """Detached scalars describing the sampler/trainer mismatch over the valid tokens.

    "mismatch/abs_logp_diff": mean |old - sampler| per token; "mismatch/max_ratio": largest
    token ratio pi_old/pi_sampler (exp of the clamped log ratio); "mismatch/masked_frac": fraction
    of valid tokens `mask_by_ratio(level, cap)` would drop; "mismatch/kl": mean k3 estimate of
    KL(pi_sampler || pi_old) (Schulman 2020), the quantity the papers above track.
    """
    mask = loss_mask.bool()
    n_valid = mask.sum().clamp_min(1).float()
    diff = torch.where(mask, (old_logprobs - sampler_logprobs).detach().float(), 0.0)
    ratio = torch.exp(diff.clamp(-_LOG_CLAMP, _LOG_CLAMP))
    kept = mask_by_ratio(old_logprobs, sampler_logprobs, loss_mask, level=level, cap=cap)
    k3 = torch.where(mask, ratio - diff - 1.0, 0.0)  # E_sampler[rho - log rho - 1] = KL(sampler||old)
    return {
        "mismatch/abs_logp_diff": diff.abs().sum() / n_valid,
        "mismatch/max_ratio": torch.where(mask, ratio, 0.0).max() if ratio.numel() else ratio.new_zeros(()),
        "mismatch/masked_frac": (mask & ~kept).sum().float() / n_valid,
        "mismatch/kl": k3.sum() / n_valid,
    }
