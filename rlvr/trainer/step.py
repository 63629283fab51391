"""The objective-blind step: fill the per-token record, call the composed objective, accumulate, step.

    denominator = objective.denominator(all loss masks of the optimizer step)     # once, global
    for each micro-batch:
        logprobs, entropy = forward(model, mb)
        loss, metrics = objective(TokenInputs(...), denominator, coefs)           # names no algorithm
        loss.backward()
    clip, optimizer step (or skip when the loss or gradient is non-finite)

Every stage that trains on per-token logprobs uses it (SFT's objective is the NLL term).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rlvr.algorithms.compose import Objective, TokenInputs
from rlvr.trainer.batching import MicroBatch
from rlvr.trainer.forward import completion_logprobs
from rlvr.trainer.optim import Optimizers
from rlvr.trainer.packing import PackedBatch, packed_logprobs


def token_inputs(model: nn.Module, mb: MicroBatch | PackedBatch, *, temperature: float, autocast: bool,
                 entropy_grad: bool = False) -> TokenInputs:  # fmt: skip
    """The record for one micro-batch: the policy forward plus every constant the batch carries."""
    if isinstance(mb, PackedBatch):  # SFT packing: sequences concatenated per row, no RL fields
        logprobs = packed_logprobs(model, mb, autocast=autocast)
        return TokenInputs(logprobs=logprobs, old_logprobs=logprobs.detach(), loss_mask=mb.loss_mask)
    logprobs, entropy = completion_logprobs(model, mb, temperature=temperature, autocast=autocast,
                                            entropy_grad=entropy_grad)  # fmt: skip
    old = mb.old_logprobs if mb.old_logprobs is not None else logprobs.detach()  # mu == 1: on-policy
    return TokenInputs(logprobs=logprobs, old_logprobs=old, loss_mask=mb.loss_mask, advantages=mb.advantages,
                       sampler_logprobs=mb.sampler_logprobs, ref_logprobs=mb.ref_logprobs, entropy=entropy)  # fmt: skip


class Accumulator:
    """Token-weighted means of micro-batch metrics (maxima for */max keys), summed loss."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.loss = 0.0

    @staticmethod
    def _is_max(key: str) -> bool:
        return key.endswith("max") or key.endswith("max_ratio")

    def add(self, metrics: Mapping[str, Tensor | float], *, weight: float, loss: float) -> None:
        self.loss += loss
        for k, v in metrics.items():
            v = float(v)
            if self._is_max(k):
                self.sums[k] = max(self.sums.get(k, -math.inf), v)
                self.weights[k] = 1.0
            elif weight > 0:  # a micro-batch with no counted token has no say in a token mean
                self.sums[k] = self.sums.get(k, 0.0) + v * weight
                self.weights[k] = self.weights.get(k, 0.0) + weight

    def result(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            k: (v if self._is_max(k) else v / self.weights[k]) for k, v in self.sums.items()
        }
        return {**out, "loss": self.loss}


def optimizer_update(
    model: nn.Module,
    optim: Optimizers,
    batches: Sequence[MicroBatch | PackedBatch],
    objective: Objective,
    *,
    temperature: float,
    autocast: bool,
    grad_clip: float | None,
    lr_factor: float,
    coefs: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One optimizer step over all micro-batches with the step's global denominator."""
    denominator = objective.denominator([mb.loss_mask for mb in batches])
    entropy_grad = any(name == "entropy" and coef != 0 for name, _, coef in objective.terms)
    acc = Accumulator()
    for mb in batches:
        x = token_inputs(model, mb, temperature=temperature, autocast=autocast, entropy_grad=entropy_grad)
        loss, metrics = objective(x, denominator, coefs)
        loss.backward()
        acc.add(metrics, weight=float(mb.loss_mask.sum()), loss=float(loss.detach()))
    out: dict[str, Any] = acc.result()
    out["tokens"] = int(sum(int(mb.loss_mask.sum()) for mb in batches))
    out.update(apply_gradients(model, optim, grad_clip, lr_factor, finite_loss=math.isfinite(out["loss"])))
    return out


def apply_gradients(model: nn.Module, optim: Optimizers, grad_clip: float | None, factor: float, *,
                    finite_loss: bool) -> dict[str, float]:  # fmt: skip
    """Clip and step, or skip the update (and report "skipped": 1) when the loss or gradient is non-finite."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip is not None else math.inf)
    lr = optim.set_lr(factor)
    skipped = not (finite_loss and torch.isfinite(norm))
    if not skipped:
        optim.step()
    optim.zero_grad()
    return {"grad_norm": float(norm), "lr": lr, "skipped": int(skipped)}
