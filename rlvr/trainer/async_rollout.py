"""Rollout one (or `s`) steps off the policy: a deterministic pipeline, `rollout.max_staleness = s`.

Batch t is always sampled by the weights after step max(t - 1 - s, 0), whatever the timing: at the
start of step t the engine holds the weights after step t - 1, so the pipeline samples batch t + s
then (batches 1 … 1 + s at the first step, all from the initial weights), while step t trains on a
batch sampled s steps earlier.  s = 0 is the synchronous loop (batch t sampled at the start of step t,
by the weights after step t - 1), with the same code path and results as before the pipeline existed.

Overlap: when the engine runs in its own process (`engine.out_of_process`, vLLM's server mode) the
prefetch runs on a background thread while the trainer steps, and `settle()` (called before every
weight update) waits for it; with an in-process engine the prefetch runs inline: the same batches and
the same results, without the overlap (there is one set of cores and one Python interpreter).

Off-policy correction: every group is tagged with the engine version (optimizer steps) that sampled
it; its `sampler_logprobs` are the behaviour policy's, so the trainer's IS correction
(`algorithm.correction`, truncated IS by default when s > 0) weights pi_old / pi_behaviour, and the
PPO ratio stays pi_theta / pi_old: the decoupled objective of AReaL (Fu et al. 2025, "AReaL: a
large-scale asynchronous reinforcement learning system", §5).  With mu > 1, pi_old is the proximal
policy (the weights after step t - 1, recomputed by the trainer) and the clip is taken around it; with
mu = 1, pi_old is the current policy itself (ratio 1, nothing clipped) and the gradient is
min(pi_theta / pi_behaviour, cap) * A * grad log pi_theta, truncated IS against the behaviour policy
(prime-rl's one-step-off loss also weights by trainer over inference probabilities;
tests/algorithms/test_compose.py holds both cases to hand-derived numbers).  Resume is exact: the
batches sampled ahead are part of the stage's state and are saved with every checkpoint.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from rlvr.trainer.rl_steps import collect_groups
from rlvr.trainer.run import Timer
from rlvr.types import Group


@dataclass(slots=True)
class Batch:
    """The groups sampled for one step, the version of the weights that sampled them, and the fraction
    of zero-variance groups among all groups sampled (dynamic sampling's dropped ones included)."""

    step: int
    groups: list[Group]
    zero_var: float
    version: int


class RolloutPipeline:
    """Hands the RL step its batch and samples ahead as `max_staleness` says (module docstring)."""

    def __init__(self, max_staleness: int = 0) -> None:
        self.max_staleness = max_staleness
        self.pending: dict[int, Batch] = {}
        self._futures: list[Future[Batch]] = []  # sampled in order on one background thread
        self._pool: ThreadPoolExecutor | None = None

    def batch(self, st: Any, step: int, timer: Timer) -> tuple[Batch, dict[str, float]]:
        """Batch `step` (sampled ahead, or now) and its staleness metrics; starts sampling ahead."""
        self.settle()
        current = st.opt_step  # the version the engine holds: the weights after step `step - 1`
        batch = self.pending.pop(step, None) or self._sample(st, step, timer)
        for ahead in range(step + 1, min(step + self.max_staleness, st.config.run.steps) + 1):
            if ahead not in self.pending and self.behaviour_step(ahead) == step - 1:  # not after a resume
                self._ahead(st, ahead, timer)
        lag = current - batch.version  # optimizer steps between the sampler's weights and the trainer's
        return batch, {"staleness/steps": float(lag), "staleness/policy_version": float(batch.version),
                       "staleness/ahead": float(len(self.pending) + len(self._futures))}  # fmt: skip

    def behaviour_step(self, step: int) -> int:
        """The step whose weights sample batch `step`: max(step - 1 - max_staleness, 0)."""
        return max(step - 1 - self.max_staleness, 0)

    def settle(self) -> None:
        """Wait for a batch being sampled in the background (before the engine's weights change)."""
        futures, self._futures = self._futures, []
        for future in futures:
            batch = future.result()
            self.pending[batch.step] = batch

    # ------------------------------------------------------------ driver interface
    def state_dict(self) -> dict[str, Any]:
        self.settle()
        return {"max_staleness": self.max_staleness, "pending": dict(self.pending)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        self.pending = dict((state or {}).get("pending", {}))

    # ------------------------------------------------------------ helpers
    def _ahead(self, st: Any, step: int, timer: Timer) -> None:
        if getattr(st.engine, "out_of_process", False):
            self._pool = self._pool or ThreadPoolExecutor(1, thread_name_prefix="rlvr-rollout")
            self._futures.append(self._pool.submit(self._sample, st, step, timer))
        else:
            self.pending[step] = self._sample(st, step, timer)

    @staticmethod
    def _sample(st: Any, step: int, timer: Timer) -> Batch:
        a = st.config.algorithm
        version = st.engine.version
        groups, zero_var = collect_groups(st, step, timer, dynamic_sampling=a.dynamic_sampling,
                                          max_tries=a.max_sampling_tries)  # fmt: skip
        for g in groups:
            g.policy_version = version
        return Batch(step, groups, zero_var, version)
