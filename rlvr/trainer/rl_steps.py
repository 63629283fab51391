"""The named steps of the RL loop (`rlvr.trainer.rl.train_rl` reads as a sequence of these).

Each helper does one thing: collect groups (with DAPO dynamic sampling), turn groups into samples,
attach old/reference logprobs, compute advantages, run one optimizer step over the micro-batches
with the global denominator, and summarise what happened as the shared metric keys.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rlvr.algorithms import registry
from rlvr.algorithms.advantages import zero_variance_frac
from rlvr.algorithms.aggregate import aggregate, global_denominator
from rlvr.algorithms.correction import mismatch_metrics, truncated_is_weights
from rlvr.config import RLConfig
from rlvr.rollout.base import SamplingParams
from rlvr.trainer.batching import MicroBatch, Sample
from rlvr.trainer.data import DataCursor
from rlvr.trainer.forward import completion_logprobs, completion_logprobs_no_grad
from rlvr.trainer.optim import Optimizers, lr_factor
from rlvr.trainer.run import Timer, step_seed
from rlvr.types import Example, Group


@dataclass(slots=True)
class RLState:
    """Everything the loop carries from step to step."""

    config: RLConfig
    model: nn.Module
    tokenizer: Any
    task: Any
    engine: Any
    ref_model: nn.Module | None
    optim: Optimizers
    cursor: DataCursor[Example]
    collect: Callable[..., list[Group]]
    step: int = 0  # RL steps completed
    opt_step: int = 0  # optimizer steps completed
    skips: int = 0  # consecutive non-finite updates
    fns: dict[str, Callable[..., Any]] = field(default_factory=dict)
    autocast: bool = False  # model.bf16_autocast resolved for the model's device

    def trainer_state(self) -> dict[str, Any]:
        return {"opt_step": self.opt_step, "skips": self.skips, "optimizer": self.optim.state_dict(),
                "cursor": self.cursor.state_dict()}  # fmt: skip

    @property
    def temperature(self) -> float:
        return self.config.rollout.temperature


class _TimedTask:
    """Wraps a task so the time spent in `score` (the verifiers) is measured apart from generation."""

    def __init__(self, task: Any, timer: Timer) -> None:
        self._task, self._timer = task, timer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def score(self, example: Example, completion: str) -> Any:
        with self._timer("score"):
            return self._task.score(example, completion)


def sampling_params(st: RLState, step: int, attempt: int) -> SamplingParams:
    r = st.config.rollout
    return SamplingParams(
        n=r.group_size, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_new_tokens=r.max_new_tokens,
        min_new_tokens=r.min_new_tokens, stop_token_ids=(st.tokenizer.eos_token_id,),
        seed=step_seed(st.config.run.seed, step, attempt),
    )  # fmt: skip


def collect_groups(st: RLState, step: int, timer: Timer) -> tuple[list[Group], int]:
    """Sample `prompts_per_step` prompts and their groups; (groups, zero-variance groups seen).

    With dynamic sampling (DAPO, Yu et al. 2025, §3.2) groups whose rewards are all equal carry no
    signal and are dropped; more prompts are drawn until the batch is full or `max_sampling_tries`
    runs are spent, and then the batch is topped up with dropped groups so its size stays fixed.
    """
    need, a = st.config.rollout.prompts_per_step, st.config.algorithm
    task = _TimedTask(st.task, timer)
    kept: list[Group] = []
    dropped: list[Group] = []
    for attempt in range(a.max_sampling_tries if a.dynamic_sampling else 1):
        examples = st.cursor.take(need - len(kept))
        t = time.perf_counter()
        groups = st.collect(st.engine, st.tokenizer, task, examples, sampling_params(st, step, attempt),
                            chat_template=st.config.model.chat_template)  # fmt: skip
        timer.add("generate", time.perf_counter() - t)
        for g in groups:
            signal = len(set(g.rewards)) > 1
            (kept if signal or not a.dynamic_sampling else dropped).append(g)
        if len(kept) >= need:
            break
    zero_var = len(dropped) + sum(len(set(g.rewards)) <= 1 for g in kept)
    return kept + dropped[: need - len(kept)], zero_var


def to_samples(groups: Sequence[Group], *, mask_truncated: bool) -> list[Sample]:
    samples = []
    for g in groups:
        for c, s in zip(g.completions, g.scores):
            samples.append(Sample(
                prompt_ids=tuple(g.prompt_ids), completion_ids=tuple(c.token_ids), sampler_logprobs=c.sampler_logprobs,
                reward=s.total, masked=mask_truncated and c.truncated, index=len(samples),
            ))  # fmt: skip
    return samples


def attach(
    model: nn.Module, batches: Sequence[MicroBatch], key: str, *, temperature: float, autocast: bool
) -> None:
    """Store no-grad completion logprobs of `model` in each batch's extras[key] (old or reference)."""
    for mb in batches:
        mb.extras[key] = completion_logprobs_no_grad(model, mb, temperature=temperature, autocast=autocast)


def compute_advantages(
    st: RLState, groups: Sequence[Group], samples: Sequence[Sample], batches: Sequence[MicroBatch]
) -> dict[str, float]:
    """Rewards (minus beta * sequence KL when KL is in the reward) -> advantages, set on every batch."""
    a = st.config.algorithm
    rewards = torch.tensor([s.reward for s in samples], dtype=torch.float32)  # [N]
    group_ids = torch.tensor(
        [i for i, g in enumerate(groups) for _ in g.completions]
    )  # [N], as to_samples orders
    if a.beta > 0 and a.kl_in == "reward":
        seq_kl = torch.zeros_like(rewards)
        for mb in batches:
            kl = st.fns["kl"](mb.extras["old_logprobs"], mb.extras["ref_logprobs"]) * mb.loss_mask
            seq_kl[mb.index] = kl.sum(-1)
        rewards = rewards - a.beta * seq_kl
    fn = st.fns["advantage"]
    kwargs = {"scale": a.scale_advantages} if "scale" in inspect.signature(fn).parameters else {}
    adv = fn(rewards, group_ids, **kwargs).float()  # [N]
    for mb in batches:
        mb.advantages = adv[mb.index]
    stats = {"adv/mean": adv.mean(), "adv/std": adv.std() if adv.numel() > 1 else 0.0, "adv/min": adv.min(),
             "adv/max": adv.max(), "groups/zero_var_frac": zero_variance_frac(rewards, group_ids)}  # fmt: skip
    return {k: float(v) for k, v in stats.items()}


def objective_kwargs(fn: Callable[..., Any], st: RLState) -> dict[str, Any]:
    a = st.config.algorithm
    params = inspect.signature(fn).parameters
    hyper = {"clip_low": a.clip_low, "clip_high": a.clip_high, "dual_clip": a.dual_clip}
    return {k: v for k, v in hyper.items() if k in params and v is not None}


def micro_step(st: RLState, mb: MicroBatch, denominator: Tensor, acc: _Accumulator) -> None:
    """Forward, per-token loss, aggregation with the step's global denominator, backward."""
    a, r = st.config.algorithm, st.config.rollout
    logprobs, entropy = completion_logprobs(st.model, mb, temperature=st.temperature,
                                            autocast=st.autocast)  # fmt: skip
    old = mb.extras.get("old_logprobs", logprobs.detach())  # mu == 1: on-policy, no second forward
    mask = mb.loss_mask
    per_token, metrics = st.fns["objective"](logprobs=logprobs, old_logprobs=old, advantages=mb.advantages,
                                             loss_mask=mask, **objective_kwargs(st.fns["objective"], st))  # fmt: skip
    if mb.sampler_logprobs is not None:
        if a.tis_cap is not None:
            per_token = per_token * truncated_is_weights(
                old, mb.sampler_logprobs, mask, level=a.tis_level, cap=a.tis_cap
            )
        metrics.update(
            mismatch_metrics(old, mb.sampler_logprobs, mask, cap=a.tis_cap or 2.0, level=a.tis_level)
        )
    if "ref_logprobs" in mb.extras:
        kl = st.fns["kl"](logprobs, mb.extras["ref_logprobs"])
        if a.kl_in == "loss":
            per_token = per_token + a.beta * kl
        metrics["kl"] = _masked(kl.detach(), mask)
    loss = aggregate(per_token, mask, a.aggregation, denominator=denominator, max_len=r.max_new_tokens)
    loss.backward()
    metrics["entropy"] = _masked(entropy, mask)
    acc.add(metrics, weight=float(mask.sum()), loss=float(loss.detach()))


def _masked(x: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


class _Accumulator:
    """Token-weighted means of micro-batch metrics (maxima for */max keys), summed loss."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self.loss = 0.0

    def add(self, metrics: dict[str, Tensor], *, weight: float, loss: float) -> None:
        self.loss += loss
        for k, v in metrics.items():
            v = float(v)
            if k.endswith("max") or k.endswith("max_ratio"):
                self.sums[k] = max(self.sums.get(k, -math.inf), v)
                self.weights[k] = 1.0
            else:
                self.sums[k] = self.sums.get(k, 0.0) + v * weight
                self.weights[k] = self.weights.get(k, 0.0) + weight

    def result(self) -> dict[str, float]:
        out = {k: (v if k.endswith("max") or k.endswith("max_ratio") else v / max(self.weights[k], 1e-12))
               for k, v in self.sums.items()}  # fmt: skip
        return {**out, "loss": self.loss}


def optimizer_update(st: RLState, batches: Sequence[MicroBatch]) -> dict[str, float]:
    """One optimizer step over all micro-batches: global denominator, accumulate, clip, step (or skip)."""
    a, o = st.config.algorithm, st.config.optim
    denominator = global_denominator([mb.loss_mask for mb in batches], a.aggregation,
                                     max_len=st.config.rollout.max_new_tokens)  # fmt: skip
    acc = _Accumulator()
    for mb in batches:
        micro_step(st, mb, denominator, acc)
    metrics = acc.result()
    metrics.update(apply_gradients(st.model, st.optim, o.grad_clip, lr_factor(st.opt_step, o, st.config.optimizer_steps),
                                   finite_loss=math.isfinite(metrics["loss"])))  # fmt: skip
    st.opt_step += 1
    return metrics


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


def reward_metrics(groups: Sequence[Group]) -> dict[str, float]:
    """reward/total, reward/<part>, accuracy and response-length statistics of the step's samples."""
    scores = [s for g in groups for s in g.scores]
    comps = [c for g in groups for c in g.completions]
    n = max(len(scores), 1)
    out = {"reward/total": sum(s.total for s in scores) / n}
    for part in sorted({p for s in scores for p in s.parts}):
        out[f"reward/{part}"] = sum(s.parts.get(part, 0.0) for s in scores) / n
    if "reward/accuracy" in out:
        out["accuracy"] = out["reward/accuracy"]
    lengths = [len(c.token_ids) for c in comps] or [0]
    out.update({"length/mean": sum(lengths) / len(lengths), "length/min": min(lengths), "length/max": max(lengths),
                "length/clipped_ratio": sum(c.truncated for c in comps) / max(len(comps), 1)})  # fmt: skip
    return out


def sample_rows(step: int, groups: Sequence[Group]) -> list[dict[str, Any]]:
    return [
        {"step": step, "example_id": g.example.id, "prompt": g.prompt, "completion": c.text, "reward": s.total,
         "parts": dict(s.parts), "finish_reason": c.finish_reason}
        for g in groups for c, s in zip(g.completions, g.scores)
    ]  # fmt: skip


def resolve_functions(config: RLConfig) -> dict[str, Callable[..., Any]]:
    a = config.algorithm
    return {"advantage": registry.resolve("advantage", a.advantage), "objective": registry.resolve("objective", a.objective),
            "kl": registry.resolve("kl", a.kl_estimator)}  # fmt: skip
