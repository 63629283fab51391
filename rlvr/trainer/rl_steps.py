"""The named steps of an RL step (`rlvr.trainer.rl.RLStage.step` reads as a sequence of these).

Each helper does one thing: collect groups (with DAPO dynamic sampling), score the reference policy
through its engine, compute sequence-level advantages on the groups, turn groups into samples, and
summarise what happened as the shared metric keys.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from rlvr.algorithms.advantages import zero_variance_frac
from rlvr.rollout.base import SamplingParams
from rlvr.tasks.base import grade
from rlvr.trainer.batching import Sample
from rlvr.trainer.run import Timer, step_seed
from rlvr.types import Example, Group


class _TimedTask:
    """Wraps a task so the time spent in `score` (the verifiers) is measured apart from generation."""

    def __init__(self, task: Any, timer: Timer) -> None:
        self._task, self._timer = task, timer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def score(self, example: Example, completion: str, *, prefix: str | None = None) -> Any:
        with self._timer("score"):
            if prefix is None:
                return self._task.score(example, completion)
            return grade(self._task, example, completion, prefix=prefix)


def sampling_params(config: Any, eos_id: int | None, step: int, attempt: int) -> SamplingParams:
    r = config.rollout
    return SamplingParams(
        n=r.group_size, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_new_tokens=r.max_new_tokens,
        min_new_tokens=r.min_new_tokens, stop_token_ids=() if eos_id is None else (eos_id,),
        seed=step_seed(config.run.seed, step, attempt),
    )  # fmt: skip


def collect_groups(st: Any, step: int, timer: Timer, *, dynamic_sampling: bool = False,
                   max_tries: int = 1) -> tuple[list[Group], float]:  # fmt: skip
    """Sample `prompts_per_step` prompts and their groups; (groups, fraction of all groups sampled this
    step, dropped ones included, whose rewards were all equal).

    With dynamic sampling (DAPO, Yu et al. 2025, §3.2) groups whose rewards are all equal carry no
    signal and are dropped; more prompts are drawn until the batch is full or `max_sampling_tries`
    runs are spent, and then the batch is topped up with dropped groups so its size stays fixed.
    """
    need = st.config.rollout.prompts_per_step
    task = _TimedTask(st.task, timer)
    kept: list[Group] = []
    dropped: list[Group] = []
    seen = 0
    for attempt in range(max_tries if dynamic_sampling else 1):
        examples = st.cursor.take(need - len(kept), step=step, attempt=attempt)
        t = time.perf_counter()
        params = sampling_params(st.config, st.tokenizer.eos_token_id, step, attempt)
        groups = st.collect(st.engine, st.tokenizer, task, examples, params,
                            chat_template=st.config.model.chat_template)  # fmt: skip
        timer.add("generate", time.perf_counter() - t)
        seen += len(groups)
        for g in groups:
            signal = len(set(g.rewards)) > 1
            (kept if signal or not dynamic_sampling else dropped).append(g)
        if len(kept) >= need:
            break
    zero_var = len(dropped) + sum(len(set(g.rewards)) <= 1 for g in kept)
    return kept + dropped[: need - len(kept)], zero_var / max(seen, 1)


def reference_logprobs(ref_engine: Any, groups: Sequence[Group], *, temperature: float) -> list[tuple[float, ...]]:
    """The reference policy's logprobs of every completion, through its engine's `score` (group order)."""
    prompts = [g.prompt_ids for g in groups for _ in g.completions]
    completions = [c.token_ids for g in groups for c in g.completions]
    return [s.logprobs for s in ref_engine.score(prompts, completions, temperature=temperature)]


def sequence_kl(kl: Callable[..., torch.Tensor], policy: Sequence[Sequence[float]],
                ref: Sequence[Sequence[float]]) -> torch.Tensor:  # fmt: skip  # -> [N]
    """Sum over each completion's tokens of the per-token KL estimate (for KL in the reward)."""
    return torch.stack([kl(torch.tensor([list(p)]), torch.tensor([list(r)])).sum() if len(p) else torch.zeros(())
                        for p, r in zip(policy, ref)])  # fmt: skip


def group_advantages(
    advantage: Callable[..., torch.Tensor], groups: Sequence[Group], rewards: torch.Tensor  # [N]
) -> tuple[torch.Tensor, dict[str, float]]:  # [N], metrics
    """Sequence-level advantages of the step's groups (GRPO & co: each sample against its group)."""
    group_ids = torch.tensor([i for i, g in enumerate(groups) for _ in g.completions])  # [N]
    adv = advantage(rewards, group_ids).float()
    stats = {"adv/mean": adv.mean(), "adv/std": adv.std() if adv.numel() > 1 else 0.0, "adv/min": adv.min(),
             "adv/max": adv.max(), "groups/zero_var_frac": zero_variance_frac(rewards, group_ids)}  # fmt: skip
    return adv, {k: float(v) for k, v in stats.items()}


def to_samples(groups: Sequence[Group], advantages: torch.Tensor, ref: Sequence[Sequence[float]] | None, *,
               mask_truncated: bool) -> list[Sample]:  # fmt: skip
    """One training sample per completion, in group order, carrying everything the loss needs."""
    samples: list[Sample] = []
    for g in groups:
        for c, s in zip(g.completions, g.scores):
            i = len(samples)
            samples.append(Sample(
                prompt_ids=tuple(g.prompt_ids), completion_ids=tuple(c.token_ids), sampler_logprobs=c.sampler_logprobs,
                ref_logprobs=None if ref is None else tuple(ref[i]), advantage=float(advantages[i]), reward=s.total,
                masked=mask_truncated and c.truncated, index=i,
            ))  # fmt: skip
    return samples


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
    """samples.jsonl rows; `prefix` is what the prompt left open, so `rlvr verify` grades them the same."""
    return [
        {"step": step, "example_id": g.example.id, "prompt": g.prompt, "prefix": g.prefix,
         "completion": c.text, "reward": s.total, "parts": dict(s.parts), "finish_reason": c.finish_reason}
        for g in groups for c, s in zip(g.completions, g.scores)
    ]  # fmt: skip
