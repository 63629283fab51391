"""One objective composed from pure terms, over one record of per-token inputs.

The trainer's step is objective-blind: it fills a `TokenInputs` record for a micro-batch and calls an
`Objective` built once from the config.  The objective is

    loss = aggregate( w * policy  +  beta * kl  -  c_ent * entropy  [+ distillation + value terms],
                      loss_mask, denominator )

where each term is a pure function `TokenInputs -> (per-token loss [B, T], metrics)` with its settings
already bound, `w` is the sampler-mismatch correction (truncated / masked importance sampling, applied
to the policy term only, as Yao et al. 2025 weight the policy gradient), and the denominator is the
optimizer step's global one (`denominator(all loss masks)`, computed once per step; see `aggregate`).
Coefficients may change during a run (adaptive KL): the caller passes them per call.

Adding an algorithm is adding a term function here (or in its own module), a registry row, and a
config section that owns its defaults; the trainer does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlvr.algorithms.correction import mask_by_ratio, mismatch_metrics, truncated_is_weights

__all__ = ["Objective", "Term", "TokenInputs", "entropy_term", "kl_term", "masked_mean", "nll_term", "policy_term"]

Metrics = dict[str, Tensor]


@dataclass(slots=True)
class TokenInputs:
    """Everything any objective term may read for one micro-batch; `[B, T]` unless noted.

    `logprobs` carries the gradient; the others are constants.  `old_logprobs` is the proximal policy
    (the weights before this step's updates) as the trainer computes it (`logprobs.detach()` when
    mu = 1); it is the sampling-time policy only when rollout.max_staleness = 0.  `sampler_logprobs`
    are what the engine reported for the weights that sampled the batch (the behaviour policy);
    `ref_logprobs` the reference policy's.
    """

    logprobs: Tensor
    old_logprobs: Tensor
    loss_mask: Tensor  # bool, True where a token counts
    advantages: Tensor | None = None  # [B] (sequence-level, broadcast) or [B, T]
    sampler_logprobs: Tensor | None = None
    ref_logprobs: Tensor | None = None
    entropy: Tensor | None = None  # differentiable when an entropy term is on
    teacher_logprobs: Tensor | None = None  # distillation (sampled token)
    teacher_topk_ids: Tensor | None = None  # [B, T, K]
    teacher_topk_logprobs: Tensor | None = None  # [B, T, K]
    topk_logprobs: Tensor | None = None  # [B, T, K] the student's at teacher_topk_ids (differentiable)
    values: Tensor | None = None  # critic (PPO with a value model)
    old_values: Tensor | None = None
    returns: Tensor | None = None


Term = Callable[[TokenInputs], tuple[Tensor, Metrics]]
_INPUT_OF = {"kl": "ref_logprobs", "entropy": "entropy"}  # what a metric-only term reads


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:  # [B, T], [B, T] -> scalar
    m = mask.to(torch.float32)
    return (x.detach().float() * m).sum() / m.sum().clamp_min(1.0)


def policy_term(fn: Callable[..., tuple[Tensor, Metrics]], settings: Mapping[str, object]) -> Term:
    """A policy-gradient objective `fn(logprobs=, old_logprobs=, advantages=, loss_mask=, **settings)`."""

    def term(x: TokenInputs) -> tuple[Tensor, Metrics]:
        if x.advantages is None:
            raise ValueError("the policy term needs advantages in the token inputs")
        return fn(logprobs=x.logprobs, old_logprobs=x.old_logprobs, advantages=x.advantages,
                  loss_mask=x.loss_mask, **settings)  # fmt: skip

    return term


def kl_term(estimator: Callable[..., Tensor], settings: Mapping[str, object]) -> Term:
    """Per-token KL(pi || ref) by one of Schulman's estimators (`rlvr.algorithms.kl`); metric "kl"."""

    def term(x: TokenInputs) -> tuple[Tensor, Metrics]:
        if x.ref_logprobs is None:
            raise ValueError("the KL term needs ref_logprobs in the token inputs")
        kl = estimator(x.logprobs, x.ref_logprobs, **settings)
        return kl, {"kl": masked_mean(kl, x.loss_mask)}

    return term


def nll_term(x: TokenInputs) -> tuple[Tensor, Metrics]:
    """Supervised fine-tuning: the negative log-likelihood of each target token."""
    return -x.logprobs, {}


def entropy_term(x: TokenInputs) -> tuple[Tensor, Metrics]:
    """An entropy bonus as a loss to minimise: -H per token (metric "entropy")."""
    if x.entropy is None:
        raise ValueError("the entropy term needs entropy in the token inputs")
    return -x.entropy, {"entropy": masked_mean(x.entropy, x.loss_mask)}


@dataclass(frozen=True)
class Correction:
    """Sampler/trainer mismatch correction: "none", "tis" (truncated IS) or "mis" (masked IS)."""

    kind: str = "none"
    cap: float = 2.0
    level: str = "token"
    low: float | None = None

    def weights(self, x: TokenInputs) -> tuple[Tensor | None, Metrics]:
        """(per-token weights on the policy loss or None, mismatch metrics); needs sampler logprobs."""
        if x.sampler_logprobs is None:
            return None, {}
        old, sampler, mask = x.old_logprobs, x.sampler_logprobs, x.loss_mask
        metrics = mismatch_metrics(old, sampler, mask, cap=self.cap, level=self.level)
        if self.kind == "tis":
            return truncated_is_weights(old, sampler, mask, level=self.level, cap=self.cap), metrics
        if self.kind == "mis":  # dropped tokens keep their place in the denominator (the conservative choice)
            keep = mask_by_ratio(old, sampler, mask, level=self.level, cap=self.cap, low=self.low)
            return keep.to(old.dtype), metrics
        return None, metrics


@dataclass(frozen=True)
class Objective:
    """The composed per-token objective (see the module docstring).

    `terms`: (name, term, coefficient) triples; the term named "policy" gets the correction weights.
    `metric_terms`: terms computed for their metrics only (e.g. the KL when it sits in the reward).
    `aggregate(per_token, loss_mask, denominator)` and `denominator(loss_masks)` are one aggregation
    mode's two halves.
    """

    terms: tuple[tuple[str, Term, float], ...]
    aggregate: Callable[[Tensor, Tensor, Tensor], Tensor]
    denominator: Callable[[Sequence[Tensor]], Tensor]
    correction: Correction = field(default_factory=Correction)
    metric_terms: tuple[tuple[str, Term], ...] = ()

    def __call__(
        self, x: TokenInputs, denominator: Tensor, coefs: Mapping[str, float] | None = None
    ) -> tuple[Tensor, Metrics]:
        """(scalar loss of this micro-batch under the step's `denominator`, detached metrics)."""
        coefs = coefs or {}
        weights, metrics = self.correction.weights(x)
        total: Tensor | None = None
        for name, term, coef in self.terms:
            per_token, m = term(x)
            metrics.update(m)
            if name == "policy" and weights is not None:
                per_token = per_token * weights
            c = coefs.get(name, coef)
            if c != 0:
                total = c * per_token if total is None else total + c * per_token
        for name, term in self.metric_terms:
            if getattr(x, _INPUT_OF.get(name, "logprobs")) is not None:  # e.g. no entropy from a packed SFT row
                with torch.no_grad():
                    metrics.update(term(x)[1])
        if total is None:
            total = x.logprobs * 0.0
        return self.aggregate(total, x.loss_mask, denominator), metrics
