"""The settings of `rlvr demo`: one frozen plan per mode, and the SFT / RL configs it expands to.

Why these numbers (measured on a shared 2-core AVX512-BF16 CPU; seeds 0/1/2 gain +32/+28/+30 points
of held-out pass@1 in ~3.3 minutes; on an idle 2-core AVX2 CPU, fp32, seed 0: +27.7 points in 4m47s,
against 5m12s in the same run for the code of the day issue 19 was filed):

- Task: three-digit addition and subtraction with schoolbook column traces (`7+5=12 4+8+1=13`,
  borrows made explicit).  A 1M-parameter character model learns the procedure in ~1,500 SFT steps,
  a trace is ~30 tokens (cheap to sample), and grading is exact integer comparison, so the
  before/after difference is not verifier noise.
- Cold start: each SFT trace has probability `sft_noise` = 0.5 of one plausible slip (a dropped
  carry or borrow, a column off by one) carried through to a wrong answer.  The SFT model imitates
  a solver that is right about half the time: held-out pass@1 (sampled at temperature 1) lands
  at 45-50%, and even its greedy answers are only 55-63% right.
- GRPO with accuracy + format rewards then teaches it to stop slipping: the reward is the only
  signal that tells a slipped trace from a clean one.  Greedy accuracy rises too (to ~82-88%), so
  the gain is not just a sharper sampling distribution.  Learning rate 3e-5: with fresh Adam state
  every parameter moves by ~lr per step whatever the gradient's size; at 3e-4 the policy collapsed.
- Threads: torch's default, `--threads N` to override (see `DemoPlan.threads`).
- Batch shapes (issue 19, by speed: the same data, optimizer steps and loss; CPU time per step measured
  at one thread): SFT in micro-batches of 16 (two per step of 32 traces: ~9% less CPU per step at one
  thread, activations that fit the core's cache and half the padding; ~2% at two threads), GRPO in
  micro-batches of 32 (four per step, length-bucketed: ~7% less per step than 64), all 128 rows of a
  GRPO step decoded together (~7% less than two chunks of 64), the engine checking for finished rows
  after every decode step instead of every 8th (~7% less per GRPO step: no decode steps past the
  longest completion) and the held-out evaluations in chunks of 256 rows (~20% less than 64).  The
  loss keeps one global denominator per optimizer step, so splitting a step into micro-batches changes
  only the order of float additions; the sampled completions are equally distributed but not the same
  draws as with other chunk sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rlvr.config import RLConfig, SFTConfig, parse_config


@dataclass(frozen=True)
class DemoPlan:
    """Everything `run_demo` varies; `quick` is the same recipe with smaller budgets (for tests)."""

    task: str = "arithmetic"
    task_kwargs: dict[str, Any] = field(default_factory=lambda: {"digits": 3, "ops": "+-"})
    n_train: int = 2000
    n_test: int = 200
    preset: str = "1m"
    # SFT cold start on noisy worked solutions
    sft_noise: float = 0.5
    sft_steps: int = 1500
    sft_batch: int = 32
    sft_micro_batch: int = 16
    sft_lr: float = 1e-3
    # GRPO
    rl_steps: int = 150
    group_size: int = 8
    prompts_per_step: int = 16
    rl_lr: float = 3e-5
    temperature: float = 1.0
    max_new_tokens: int = 64
    micro_batch_size: int = 32
    rollout_batch: int = 128  # rows the engine decodes together: one GRPO step's prompts x samples
    # decode steps between the engine's "all rows finished?" checks: on a CPU the check is free (no device
    # to sync with) and every extra step of 128 rows after the last one finished is wasted work
    check_every: int = 1
    # held-out evaluation (same problems and sampling before and after RL)
    eval_samples: int = 8
    eval_temperature: float = 1.0
    eval_batch: int = 256  # rows the held-out evaluation decodes together
    rl_eval_every: int = 25  # a smaller held-out eval during RL, for the report's curve (0: off)
    rl_eval_examples: int = 100
    # torch threads; None: torch's default (one per core).  A 1M model's matmuls are small: on an idle
    # 2-core AVX2 box a second thread gains little (full demo 8m15s vs 9m07s with 1 thread).  On
    # a machine busy with other work each op's thread barrier waits for a descheduled core, and 1
    # thread wins by far (seen on a shared box: the whole quick demo 56 s with 1, 11m48s with 2):
    # `rlvr demo --threads 1` there.
    threads: int | None = None

    def nominal_seconds(self) -> dict[str, float]:
        """Rough stage costs in seconds on one idle core (measured: 0.075 s per SFT step of 32 traces,
        0.5 s per GRPO step of 128 samples, 2.5 s per 1,000 eval completions); for time-left only."""
        per_eval = 2.5 * self.n_test * (self.eval_samples + 1) / 1000
        during = self.rl_steps // self.rl_eval_every if self.rl_eval_every else 0
        small_eval = 2.5 * self.rl_eval_examples * max(1, self.eval_samples // 2) / 1000
        return {
            "build": 0.5,
            "sft": 0.075 * self.sft_steps * self.sft_batch / 32,
            "eval_before": per_eval,
            "grpo": 0.5 * self.rl_steps * self.group_size * self.prompts_per_step / 128 + during * small_eval,
            "eval_after": per_eval,
        }

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


PLANS: dict[str, DemoPlan] = {
    "full": DemoPlan(),
    # Two-digit addition learns ~4x faster: the same recipe in well under a minute (the CLI test).
    "quick": DemoPlan(
        task_kwargs={"digits": 2, "ops": "+"},
        n_test=100,
        sft_steps=400,
        rl_steps=60,
        max_new_tokens=48,
        rl_eval_every=20,
        rl_eval_examples=50,
    ),
}


def task_kwargs(plan: DemoPlan, seed: int) -> dict[str, Any]:
    """The task's constructor kwargs; the seed picks which problems each split holds."""
    return {**plan.task_kwargs, "seed": seed, "n_train": plan.n_train, "n_test": plan.n_test}


def sft_config(plan: DemoPlan, out_dir: Path, seed: int, *, progress: bool) -> SFTConfig:
    """Cold start: `plan.sft_steps` steps on noisy traces, cosine schedule to 10% of the peak lr."""
    return parse_config(
        {
            "kind": "sft",
            "model": {"preset": plan.preset, "seed": seed},
            "task": {"name": plan.task, "kwargs": task_kwargs(plan, seed)},
            "data": {"noise": plan.sft_noise, "batch_size": plan.sft_batch},
            "optim": {
                "lr": plan.sft_lr,
                "betas": [0.9, 0.98],
                "warmup_steps": 20,
                "schedule": "cosine",
                "min_lr_ratio": 0.1,
                "micro_batch_size": plan.sft_micro_batch,
            },
            "run": {
                "out_dir": str(out_dir),
                "threads": plan.threads,
                "steps": plan.sft_steps,
                "seed": seed,
                "progress": progress,
                "tensorboard": False,
                "samples_every": 0,
            },
        },
        kind="sft",
        source="demo SFT plan",
    )  # type: ignore[return-value]


def rl_config(plan: DemoPlan, out_dir: Path, seed: int, *, progress: bool) -> RLConfig:
    """GRPO (group-normalised advantages, PPO-clip, token mean, no KL) on accuracy + format rewards."""
    return parse_config(
        {
            "kind": "rl",
            "model": {"preset": plan.preset, "seed": seed},
            "task": {"name": plan.task, "kwargs": task_kwargs(plan, seed)},
            "rollout": {
                "group_size": plan.group_size,
                "prompts_per_step": plan.prompts_per_step,
                "temperature": plan.temperature,
                "max_new_tokens": plan.max_new_tokens,
                "engine": {"type": "hf", "max_batch_size": plan.rollout_batch, "check_every": plan.check_every},
            },
            "algorithm": {"advantage": "grpo", "objective": "ppo_clip", "kl": {"beta": 0.0}},
            "optim": {"lr": plan.rl_lr, "micro_batch_size": plan.micro_batch_size},
            "run": {
                "out_dir": str(out_dir),
                "threads": plan.threads,
                "steps": plan.rl_steps,
                "seed": seed,
                "progress": progress,
                "tensorboard": False,
                "samples_every": 5,
                "eval_every": plan.rl_eval_every,
            },
        },
        kind="rl",
        source="demo RL plan",
    )  # type: ignore[return-value]
