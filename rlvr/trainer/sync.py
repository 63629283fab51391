"""Weight sync that is checked: a versioned update the engine confirms, then a logprob comparison.

A weight sync that silently does nothing is the most common failure users report against RL
frameworks (the sampler keeps sampling the old policy; training goes off-policy without a sign).
After every update the trainer (1) checks that the engine reports the version it was sent, and
(2) scores one of the step's sampled completions with both the trainer's model and the engine:
the two must agree to within fp32 noise (max |diff| <= 1e-3 nats per token) or, when either side
runs bf16 matmuls, bf16 noise (mean |diff| <= 5e-2).  A mismatch raises `WeightSyncError` with both
numbers; the run stops before it trains on samples from the wrong policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rlvr.models.lora import is_lora, merged_state_dict
from rlvr.rollout.base import WeightSyncError
from rlvr.trainer.batching import Sample, collate
from rlvr.trainer.distributed import full_state_dict
from rlvr.trainer.forward import completion_logprobs_no_grad

FP32_MAX_ABS = 1e-3  # nats per token, worst token
BF16_MEAN_ABS = 5e-2  # nats per token, mean over the completion


def update_engine(engine: Any, model: nn.Module, version: int) -> None:
    """Send the policy's weights as `version` (a LoRA policy's merged weights, under the base model's
    names); raise unless the engine confirms exactly that version."""
    state = model.state_dict()
    if is_lora(model):  # merge full tensors: under FSDP2 every rank gathers the shards first (a collective)
        state = merged_state_dict(model, full_state_dict(state))
    confirmed = engine.update_weights(state, version=version)
    if confirmed != version:
        raise WeightSyncError(
            f"weight sync: sent policy version {version}, the engine reports {confirmed!r}; "
            "its update_weights did not take the weights"
        )


def check_logprobs(engine: Any, model: nn.Module, sample: Sample, *, temperature: float, autocast: bool,
                   bf16: bool, pad_id: int) -> dict[str, float]:  # fmt: skip
    """Compare the engine's and the trainer's logprobs of one completion; metrics, or WeightSyncError."""
    if not sample.completion_ids:
        return {}
    mb = collate([Sample(sample.prompt_ids, sample.completion_ids)], pad_id)
    was_training = model.training
    model.eval()  # no dropout: the engine's copy runs in eval mode
    try:
        trainer = completion_logprobs_no_grad(model, mb, temperature=temperature, autocast=autocast)[0]
    finally:
        model.train(was_training)
    scored = engine.score([sample.prompt_ids], [sample.completion_ids], temperature=temperature)[0]
    engine_lp = torch.tensor(scored.logprobs, dtype=torch.float32)
    if engine_lp.shape != trainer.shape:
        raise WeightSyncError(f"weight sync check: engine scored {engine_lp.numel()} tokens, trainer {trainer.numel()}")
    diff = (engine_lp - trainer.float()).abs()
    worst, mean = float(diff.max()), float(diff.mean())
    bad = mean > BF16_MEAN_ABS if bf16 else worst > FP32_MAX_ABS
    if bad or not torch.isfinite(diff).all():
        rule = f"mean {mean:.3g} > {BF16_MEAN_ABS} (bf16)" if bf16 else f"max {worst:.3g} > {FP32_MAX_ABS} (fp32)"
        raise WeightSyncError(
            f"weight sync check failed after the update to version {engine.version}: the engine's logprobs of "
            f"a sampled completion differ from the trainer's by max {worst:.4g} / mean {mean:.4g} nats per token "
            f"({rule}); the engine is not sampling the policy being trained (an update that did not apply, "
            "stale caches, or different weights)"
        )
    return {"sync/max_abs_logp_diff": worst, "sync/mean_abs_logp_diff": mean}


def check_after_update(engine: Any, model: nn.Module, samples: Sequence[Sample], *, temperature: float,
                       autocast: bool, pad_id: int) -> dict[str, float]:  # fmt: skip
    """`check_logprobs` on the step's longest completion, with bf16 tolerances when either side runs bf16
    (trainer autocast, or an engine that computes in bf16); {} when there is nothing to compare."""
    if not samples:
        return {}
    probe = max(samples, key=lambda s: len(s.completion_ids))
    engine_model = getattr(engine, "model", None)
    bf16 = autocast or bool(getattr(engine, "bf16", False)) or (
        engine_model is not None and next(engine_model.parameters()).dtype == torch.bfloat16)
    return check_logprobs(engine, model, probe, temperature=temperature, autocast=autocast, bf16=bf16, pad_id=pad_id)
