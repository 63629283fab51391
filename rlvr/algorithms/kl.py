"""KL estimators and KL-coefficient controllers.

The estimators are Schulman's "Approximating KL Divergence" (2020, joschu.net/blog/kl-approx.html)
single-sample estimators of KL(pi || ref) from tokens sampled from pi, with
`log_ratio = ref_logprobs - logprobs` (log ref/pi):

    k1 = -log_ratio                       unbiased, high variance, can be negative
    k2 = 0.5 * log_ratio**2               biased, low variance, >= 0
    k3 = exp(log_ratio) - log_ratio - 1   unbiased, low variance, >= 0 (GRPO's choice, DeepSeekMath eq. 4)

Use them in the loss (GRPO: `beta * k3` per token) or in the reward (PPO: `token_rewards_with_kl`
with k1, controlled by `AdaptiveKLController`).  All return `[B, T]`; masking and aggregation are
the caller's job.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["AdaptiveKLController", "FixedKLController", "kl_k1", "kl_k2", "kl_k3"]


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:  # [B, T], [B, T] -> [B, T]
    """Schulman's k1 = log pi - log ref (the naive log-ratio; unbiased for KL(pi||ref))."""
    return logprobs - ref_logprobs


def kl_k2(logprobs: Tensor, ref_logprobs: Tensor) -> Tensor:  # [B, T], [B, T] -> [B, T]
    """Schulman's k2 = 0.5 * (log pi - log ref)^2 (biased, low variance; gradient equals k1's
    reverse-KL gradient in expectation, which makes it the right in-loss estimator per
    Tang & Munos 2025, "On a few pitfalls in KL divergence gradient estimation for RL")."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor, *, clamp: float = 10.0) -> Tensor:  # -> [B, T]
    """Schulman's k3 = exp(ref - logp) - (ref - logp) - 1 (unbiased, >= 0), as in GRPO (DeepSeekMath eq. 4).

    Deviation: the log-ratio is clamped to [-clamp, clamp] before exponentiating (as verl bounds
    its "low_var_kl"), so one token the policy has nearly ruled out cannot produce exp(50) and a
    non-finite loss; beyond the clamp the token's KL gradient is zero.  `clamp=float("inf")` disables it.
    """
    log_ratio = (ref_logprobs - logprobs).clamp(-clamp, clamp)
    return torch.exp(log_ratio) - log_ratio - 1.0


class FixedKLController:
    """A constant KL coefficient with the controller interface (`.value`, `.update`)."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        del current_kl, n_steps
        return self.value


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
    Preferences", §2.2): a proportional controller driving the observed KL toward `target`.

        e = clip(current_kl / target - 1, -0.2, 0.2);   beta <- beta * (1 + e * n_steps / horizon)

    `current_kl` is a Python float (the trainer reads the logged "kl" metric); `n_steps` is the
    number of samples (the paper's batch size) since the last update.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(
                f"AdaptiveKLController needs target > 0 and horizon > 0, got {target}, {horizon}"
            )
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value
