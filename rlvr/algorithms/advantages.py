"""Advantage estimators: rewards in, advantages out.

Outcome estimators share one signature, `(rewards [N] float, group_ids [N] long, **kw) -> [N]`,
where `group_ids` are arbitrary integers (not necessarily contiguous or sorted) naming the prompt
each sample answers.  A group of one sample, or a group whose rewards are all equal, carries no
learning signal and gets exactly 0 advantage (never NaN).  `gae` is token-level (PPO with a value
model) and has its own signature.

Each vectorised estimator has a readable loop version (`_grpo_loop`, ...) that is its executable
specification; tests check them equal on random inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "dr_grpo",
    "gae",
    "grpo",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "rloo",
    "token_rewards_with_kl",
    "zero_variance_frac",
]


# ----------------------------------------------------------------------------- group statistics
def _group_stats(rewards: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per-sample group count, group sum, and a flag for constant groups, plus the group index.

    Returns (count [N], total [N], constant [N] bool, inverse [N]) where each value is that of the
    sample's own group.  `constant` compares group max and min so equal rewards are detected
    exactly, without relying on a floating-point variance being exactly zero.
    """
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"rewards and group_ids must both be 1-D of equal length, got {tuple(rewards.shape)} "
            f"and {tuple(group_ids.shape)}"
        )
    uniq, inverse = torch.unique(group_ids, return_inverse=True)
    zeros = rewards.new_zeros(uniq.numel())
    count = zeros.index_add(0, inverse, torch.ones_like(rewards))
    total = zeros.index_add(0, inverse, rewards)
    gmax = zeros.scatter_reduce(0, inverse, rewards, "amax", include_self=False)
    gmin = zeros.scatter_reduce(0, inverse, rewards, "amin", include_self=False)
    return count[inverse], total[inverse], (gmax == gmin)[inverse], inverse


def zero_variance_frac(rewards: Tensor, group_ids: Tensor) -> Tensor:  # [N], [N] -> scalar
    """Fraction of groups whose rewards are all equal (no GRPO signal): the "groups/zero_var_frac" metric."""
    count, _, constant, _ = _group_stats(rewards, group_ids)
    # Each group contributes 1/count per member, so sums count groups, not samples.
    return (constant.to(rewards.dtype) / count).sum() / (1.0 / count).sum().clamp_min(1.0)


# ----------------------------------------------------------------------------- outcome estimators
def grpo(rewards: Tensor, group_ids: Tensor, *, scale: bool = True, eps: float = 1e-6) -> Tensor:
    """GRPO advantage (Shao et al. 2024, DeepSeekMath, §4.1.2): `(r - mean_g) / (std_g + eps)`.

    `std_g` uses Bessel's correction (unbiased, as TRL and verl compute it; the paper does not say).
    `scale=False` gives the mean-centred form.  Deviation: a group of one sample, or a group with
    all-equal rewards, gets exactly 0 (the formula would give 0/eps noise or NaN there).
    """
    count, total, constant, inverse = _group_stats(rewards, group_ids)
    centred = rewards - total / count
    if scale:
        sq = rewards.new_zeros(count.numel()).index_add(0, inverse, centred**2)[inverse]
        std = (sq / (count - 1).clamp_min(1.0)).sqrt()
        centred = centred / (std + eps)
    return torch.where(constant | (count < 2), torch.zeros_like(centred), centred)


def dr_grpo(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """Dr. GRPO advantage (Liu et al. 2025, "Understanding R1-Zero-Like Training"): `r - mean_g`.

    The paper drops GRPO's std division (a per-question difficulty bias).  Pair it with the
    "seq_mean_token_sum_norm" aggregation to also remove the length bias, as the paper does.
    """
    return grpo(rewards, group_ids, scale=False)


def rloo(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO advantage (Kool et al. 2019; Ahmadian et al. 2024): `r_i - mean_{j != i} r_j`.

    Equivalently `n/(n-1) * (r_i - mean_g)`.  A group of one has no leave-one-out baseline and
    gets 0 advantage; an all-equal group gets exactly 0 (not float residue).
    """
    count, total, constant, _ = _group_stats(rewards, group_ids)
    loo = (total - rewards) / (count - 1).clamp_min(1.0)
    return torch.where(constant | (count < 2), torch.zeros_like(rewards), rewards - loo)


def _batch_whiten(x: Tensor, eps: float) -> Tensor:
    """(x - mean) / (std + eps) over the whole batch, population std; all-equal -> 0."""
    if x.numel() < 2:
        return torch.zeros_like(x)
    whitened = (x - x.mean()) / (x.std(unbiased=False) + eps)
    return torch.where(x.max() == x.min(), torch.zeros_like(x), whitened)


def reinforce_pp(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """REINFORCE++ advantage (Hu et al. 2025, arXiv:2501.03262): whiten rewards over the global batch.

    `(r - mean_batch) / (std_batch + eps)`; `group_ids` are accepted for the shared signature and
    ignored.  Deviation: OpenRLHF ("reinforce") whitens per-token returns that include a per-token
    KL penalty; for outcome rewards without a KL-in-reward every token's return is r, so we whiten
    over sequences rather than tokens (no length weighting).  Population std, as OpenRLHF does.
    """
    del group_ids
    return _batch_whiten(rewards, eps)


def reinforce_pp_baseline(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    """REINFORCE++-baseline (Hu et al. 2025; OpenRLHF "reinforce_baseline"): group-mean baseline, batch whitening.

    `a = r - mean_g` for each group, then `(a - mean_batch(a)) / (std_batch(a) + eps)`.  Unlike GRPO,
    the scale is the batch's, so easy/hard prompts are not re-weighted by their own std.
    """
    return _batch_whiten(dr_grpo(rewards, group_ids), eps)


# ----------------------------------------------------------------------------- token-level (PPO)
def token_rewards_with_kl(
    rewards: Tensor,  # [B]
    kl: Tensor,  # [B, T]
    loss_mask: Tensor,  # [B, T] bool
    *,
    beta: float,
) -> Tensor:  # [B, T]
    """Per-token rewards for PPO (Ziegler et al. 2019; Ouyang et al. 2022): `-beta*kl_t` at every
    valid token plus the outcome reward at the last valid token.  Fully masked rows get all zeros.
    """
    mask = loss_mask.bool()
    out = torch.where(mask, -beta * kl, torch.zeros_like(kl))
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    last = torch.where(mask, positions, -1).max(dim=1).values  # [B]; -1 for fully masked rows
    has_any = last >= 0
    rows = torch.arange(mask.shape[0], device=mask.device)
    bonus = torch.where(has_any, rewards.to(out.dtype), torch.zeros_like(rewards, dtype=out.dtype))
    return out.index_put((rows, last.clamp_min(0)), bonus, accumulate=True)


def gae(
    token_rewards: Tensor,  # [B, T]
    values: Tensor,  # [B, T]
    loss_mask: Tensor,  # [B, T] bool
    *,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:  # advantages [B, T], returns [B, T]
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438).

    `delta_t = r_t + gamma*V_{t+1} - V_t`, `A_t = delta_t + gamma*lam*A_{t+1}`, returns `A + V`.
    Masked positions are skipped (the "next" step is the next *valid* token, so left padding,
    right padding and masked tool tokens all work), get 0 advantage and 0 return, and their
    rewards are ignored; the episode ends after the last valid token (V = 0 beyond it).
    Computed under no_grad: advantages and returns are targets, not part of the graph.
    """
    with torch.no_grad():
        mask = loss_mask.bool()
        adv = torch.zeros_like(values)
        next_value = values.new_zeros(values.shape[0])
        running = values.new_zeros(values.shape[0])
        for t in reversed(range(values.shape[1])):
            delta = token_rewards[:, t] + gamma * next_value - values[:, t]
            step = delta + gamma * lam * running
            running = torch.where(mask[:, t], step, running)
            next_value = torch.where(mask[:, t], values[:, t], next_value)
            adv[:, t] = torch.where(mask[:, t], step, torch.zeros_like(step))
        returns = torch.where(mask, adv + values, torch.zeros_like(values))
    return adv, returns


# ----------------------------------------------------------------------------- loop specifications
def _groups(group_ids: Tensor) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for i, g in enumerate(group_ids.tolist()):
        groups.setdefault(g, []).append(i)
    return groups


def _grpo_loop(rewards: Tensor, group_ids: Tensor, *, scale: bool = True, eps: float = 1e-6) -> Tensor:
    r, out = rewards.tolist(), [0.0] * len(rewards)
    for idx in _groups(group_ids).values():
        vals = [r[i] for i in idx]
        if len(vals) < 2 or max(vals) == min(vals):
            continue  # no signal: advantage stays 0
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
        for i in idx:
            out[i] = (r[i] - mean) / (std + eps) if scale else r[i] - mean
    return torch.tensor(out, dtype=rewards.dtype)


def _rloo_loop(rewards: Tensor, group_ids: Tensor) -> Tensor:
    r, out = rewards.tolist(), [0.0] * len(rewards)
    for idx in _groups(group_ids).values():
        if len(idx) < 2:
            continue
        for i in idx:
            others = [r[j] for j in idx if j != i]
            out[i] = r[i] - sum(others) / len(others)
    return torch.tensor(out, dtype=rewards.dtype)


def _whiten_loop(vals: list[float], eps: float) -> list[float]:
    if len(vals) < 2 or max(vals) == min(vals):
        return [0.0] * len(vals)
    mean = sum(vals) / len(vals)
    std = (sum((v - mean) ** 2 for v in vals) / len(vals)) ** 0.5
    return [(v - mean) / (std + eps) for v in vals]


def _reinforce_pp_loop(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    return torch.tensor(_whiten_loop(rewards.tolist(), eps), dtype=rewards.dtype)


def _reinforce_pp_baseline_loop(rewards: Tensor, group_ids: Tensor, *, eps: float = 1e-6) -> Tensor:
    centred = _grpo_loop(rewards, group_ids, scale=False).tolist()
    return torch.tensor(_whiten_loop(centred, eps), dtype=rewards.dtype)


def _gae_loop(token_rewards: Tensor, values: Tensor, loss_mask: Tensor, *, gamma: float, lam: float):
    B, T = values.shape
    adv, ret = torch.zeros(B, T, dtype=values.dtype), torch.zeros(B, T, dtype=values.dtype)
    for b in range(B):
        valid = [t for t in range(T) if loss_mask[b, t]]
        running = 0.0
        for k in reversed(range(len(valid))):
            t = valid[k]
            v_next = float(values[b, valid[k + 1]]) if k + 1 < len(valid) else 0.0
            delta = float(token_rewards[b, t]) + gamma * v_next - float(values[b, t])
            running = delta + gamma * lam * running
            adv[b, t], ret[b, t] = running, running + float(values[b, t])
    return adv, ret
