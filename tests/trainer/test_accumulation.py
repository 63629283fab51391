"""Gradient accumulation invariance: 1 micro-batch of 8 == 8 micro-batches of 1 (global denominator),
through the objective-blind step with the objective composed from the config."""

from __future__ import annotations

import pytest
import torch

from rlvr.config import AdamWConfig, RolloutConfig
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.trainer import build
from rlvr.trainer.batching import Sample, micro_batches
from rlvr.trainer.optim import build_optimizer
from rlvr.trainer.step import optimizer_update
from tests.trainer.fakes import rl_config

ADV = [1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.25, -0.25]


def _samples(with_ref: bool) -> list[Sample]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(8):
        p, c = 3 + i % 3, 2 + (5 * i) % 7
        ids = torch.randint(4, 60, (p + c,), generator=g).tolist()
        sampler = tuple(float(x) for x in -torch.rand(c, generator=g) * 3)
        ref = tuple(-4.0 for _ in range(c)) if with_ref else None
        out.append(Sample(tuple(ids[:p]), tuple(ids[p:]), sampler, ref, advantage=ADV[i], reward=float(i % 2), index=i))
    return out


def _grads(tmp_path, micro: int, **algo) -> list[torch.Tensor]:
    tok = build_tokenizer()
    model = build_model("1m", tok, 0).train()
    cfg = rl_config(tmp_path, algorithm=algo, model={"bf16_autocast": False},
                    rollout=RolloutConfig(engine="fake", group_size=4, prompts_per_step=2).model_dump(),
                    optim=AdamWConfig(micro_batch_size=micro, grad_clip=None).model_dump())  # fmt: skip
    optim = build_optimizer(model, cfg.optim)
    optim.step = lambda: None  # keep the gradients for inspection: compare the update direction
    optim.zero_grad = lambda: None
    batches = micro_batches(_samples(cfg.algorithm.kl.enabled), micro, tok.pad_token_id)
    optimizer_update(model, optim, batches, build.build_objective(cfg), temperature=1.0, autocast=False,
                     grad_clip=None, lr_factor=1.0, coefs={"kl": cfg.algorithm.kl.beta})  # fmt: skip
    return [p.grad.clone() for p in model.parameters()]


def _max_diff(a, b) -> float:
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_one_by_eight_equals_eight_by_one(tmp_path, aggregation):
    assert _max_diff(_grads(tmp_path, 8, aggregation=aggregation), _grads(tmp_path, 1, aggregation=aggregation)) < 1e-6


@pytest.mark.parametrize("correction", [{"type": "tis", "cap": 2.0}, {"type": "mis", "cap": 1.5}])
def test_invariance_with_kl_entropy_and_correction(tmp_path, correction):
    algo = {"kl": {"beta": 0.1}, "entropy": {"coef": 0.01}, "correction": correction}
    whole, split = _grads(tmp_path, 8, **algo), _grads(tmp_path, 2, **algo)
    assert _max_diff(whole, split) < 1e-6
    assert _max_diff(whole, _grads(tmp_path, 8)) > 1e-4  # the extra terms really change the gradient


@pytest.mark.parametrize("objective", ["gspo", "cispo", "reinforce", {"type": "ppo_clip", "dual_clip": 3.0}])
def test_invariance_for_every_objective(tmp_path, objective):
    agg = "seq_mean_token_mean" if objective == "gspo" else "token_mean"
    whole = _grads(tmp_path, 8, objective=objective, aggregation=agg)
    assert _max_diff(whole, _grads(tmp_path, 1, objective=objective, aggregation=agg)) < 1e-6
