"""Preference losses over (chosen, rejected) pairs: the DPO family and the Bradley-Terry reward loss.

Inputs are per pair, `[P]`: summed completion logprobs of the policy (`chosen`, `rejected`) and of the
reference (`ref_chosen`, `ref_rejected`), and completion lengths in tokens (for the length-normalised
forms).  Each loss returns `(per-pair loss [P], metrics)`; the caller sums over pairs and divides by the
optimizer step's total pair count (the explicit global denominator, as for RL), so gradient
accumulation changes nothing.

    sigmoid DPO   -(1-e) log s(b h) - e log s(-b h),   h = (pi_c - ref_c) - (pi_r - ref_r)
                  Rafailov et al. 2023 (DPO, eq. 7); e > 0 is conservative DPO (label smoothing,
                  Mitchell 2023 "A note on DPO with noisy preferences")
    IPO           (h - 1/(2 b))^2                       Azar et al. 2023, eq. 17 (sequence log-ratios,
                  as in the paper; TRL averages them over tokens instead)
    LN-DPO        sigmoid DPO on per-token means: h = (pi_c - ref_c)/|y_c| - (pi_r - ref_r)/|y_r|
                  Tulu 3 (Lambert et al. 2024, eq. 6), their best preference method; b = 5 there
    SimPO         -log s(b pi_c/|y_c| - b pi_r/|y_r| - g), no reference model
                  Meng et al. 2024, eq. 6 (b = 2, g = 1 among their settings)
    Bradley-Terry -log s(r_c - r_r) for a scalar reward model (Bradley & Terry 1952; Ouyang et al. 2022)

Call convention (the registry's "preference" table): `fn(chosen, rejected, ref_chosen, ref_rejected, *,
chosen_len, rejected_len, **settings)`; a loss ignores the inputs it does not use (the lengths in
sigmoid DPO and IPO, the reference in SimPO), so the trainer passes the same record to every loss.

Metrics: the implicit rewards `b (pi - ref)` (SimPO: `b pi / |y|`) of chosen and rejected, their margin,
and preference accuracy (the fraction of pairs whose chosen reward is higher), as means over pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bradley_terry", "dpo_sigmoid", "ipo", "length_normalized_dpo", "simpo"]

Metrics = dict[str, Tensor]


def _metrics(reward_chosen: Tensor, reward_rejected: Tensor) -> Metrics:
    rc, rr = reward_chosen.detach(), reward_rejected.detach()
    return {"rewards/chosen": rc.mean(), "rewards/rejected": rr.mean(), "rewards/margin": (rc - rr).mean(),
            "rewards/accuracy": (rc > rr).float().mean()}  # fmt: skip


def _sigmoid_loss(logits: Tensor, label_smoothing: float) -> Tensor:
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    return -(1.0 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)


def dpo_sigmoid(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
                beta: float, label_smoothing: float = 0.0, chosen_len: Tensor | None = None,
                rejected_len: Tensor | None = None) -> tuple[Tensor, Metrics]:  # fmt: skip
    """Sigmoid DPO (Rafailov et al. 2023), optionally label-smoothed (cDPO).  All inputs `[P]`."""
    c, r = chosen - ref_chosen, rejected - ref_rejected
    return _sigmoid_loss(beta * (c - r), label_smoothing), _metrics(beta * c, beta * r)


def ipo(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
        beta: float, chosen_len: Tensor | None = None, rejected_len: Tensor | None = None) -> tuple[Tensor, Metrics]:  # fmt: skip
    """IPO (Azar et al. 2023): squared distance of the log-ratio margin to 1/(2 beta).  `[P]` inputs."""
    c, r = chosen - ref_chosen, rejected - ref_rejected
    return (c - r - 1.0 / (2.0 * beta)) ** 2, _metrics(beta * c, beta * r)


def length_normalized_dpo(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, *,
                          chosen_len: Tensor, rejected_len: Tensor, beta: float,
                          label_smoothing: float = 0.0) -> tuple[Tensor, Metrics]:  # fmt: skip
    """Length-normalised DPO (Tulu 3): the DPO log-ratios divided by each completion's token count."""
    c = (chosen - ref_chosen) / chosen_len.clamp_min(1)
    r = (rejected - ref_rejected) / rejected_len.clamp_min(1)
    return _sigmoid_loss(beta * (c - r), label_smoothing), _metrics(beta * c, beta * r)


def simpo(chosen: Tensor, rejected: Tensor, ref_chosen: Tensor | None = None, ref_rejected: Tensor | None = None,
          *, chosen_len: Tensor, rejected_len: Tensor, beta: float, gamma: float) -> tuple[Tensor, Metrics]:  # fmt: skip
    """SimPO (Meng et al. 2024): reference-free, length-normalised rewards with a target margin gamma."""
    c = beta * chosen / chosen_len.clamp_min(1)
    r = beta * rejected / rejected_len.clamp_min(1)
    return -F.logsigmoid(c - r - gamma), _metrics(c, r)


def bradley_terry(reward_chosen: Tensor, reward_rejected: Tensor, *, margin: Tensor | float = 0.0
                  ) -> tuple[Tensor, Metrics]:  # fmt: skip
    """Bradley-Terry pairwise loss for a reward model: -log sigmoid(r_c - r_r - margin), `[P]`."""
    loss = -F.logsigmoid(reward_chosen - reward_rejected - torch.as_tensor(margin, dtype=reward_chosen.dtype))
    return loss, _metrics(reward_chosen, reward_rejected)
