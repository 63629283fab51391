"""The two top-level configs, with the checks that span sections.

Every check raises ValueError whose message names the key(s) and what to change; `load_config`
turns it into a `ConfigError`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlvr.config.sections import (
    AlgorithmConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
    RunConfig,
    SFTDataConfig,
    TaskConfig,
)

GROUP_RELATIVE = {"grpo", "dr_grpo", "rloo"}


class _Top(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class RLConfig(_Top):
    """`rlvr train`: GRPO-family RL on verifiable rewards."""

    kind: Literal["rl"] = "rl"
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=lambda: RunConfig(out_dir="runs/rl"))
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def optimizer_steps(self) -> int:
        return self.run.steps * self.algorithm.mu

    @property
    def micro_batches_per_step(self) -> int:
        return self.rollout.samples_per_step // self.optim.micro_batch_size

    @model_validator(mode="after")
    def _check(self) -> RLConfig:
        r, a, o = self.rollout, self.algorithm, self.optim
        if r.samples_per_step % o.micro_batch_size:
            raise ValueError(
                f"rollout.prompts_per_step * rollout.group_size = {r.prompts_per_step} * {r.group_size} = "
                f"{r.samples_per_step} is not divisible by optim.micro_batch_size = {o.micro_batch_size}; "
                f"set optim.micro_batch_size to a divisor of {r.samples_per_step}"
            )
        if r.group_size == 1 and (a.advantage in GROUP_RELATIVE or a.dynamic_sampling):
            what = (
                "algorithm.dynamic_sampling"
                if a.dynamic_sampling
                else f"algorithm.advantage = {a.advantage!r}"
            )
            raise ValueError(
                f"rollout.group_size = 1 with {what}: a group of one sample has zero advantage, so nothing "
                f"is learned; set rollout.group_size >= 2 (e.g. 8) or algorithm.advantage = 'reinforce_pp'"
            )
        if a.kl_in == "reward" and a.beta == 0:
            raise ValueError(
                "algorithm.kl_in = 'reward' needs algorithm.beta > 0 (e.g. 0.04), or remove kl_in"
            )
        if a.mu > 1 and a.objective == "reinforce":
            raise ValueError(
                "algorithm.objective = 'reinforce' is on-policy only, but algorithm.mu > 1 reuses the batch; "
                "use algorithm.objective = 'ppo_clip' or set algorithm.mu = 1"
            )
        _check_schedule(o, self.optimizer_steps)
        return self


class SFTConfig(_Top):
    """`rlvr sft`: supervised fine-tuning on prompt/completion pairs (loss on completion tokens only)."""

    kind: Literal["sft"] = "sft"
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig | None = None
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-4))
    run: RunConfig = Field(default_factory=lambda: RunConfig(out_dir="runs/sft"))

    @property
    def optimizer_steps(self) -> int:
        return self.run.steps

    @model_validator(mode="after")
    def _check(self) -> SFTConfig:
        if self.data.path is None and self.task is None:
            raise ValueError(
                "SFT needs data: set data.path to a JSONL file of prompt/completion pairs, "
                "or add a [task] section (name = ...) to train on the task's worked solutions"
            )
        if not self.data.packing and self.data.batch_size % self.optim.micro_batch_size:  # packing: rows
            raise ValueError(
                f"data.batch_size = {self.data.batch_size} is not divisible by optim.micro_batch_size = "
                f"{self.optim.micro_batch_size}; set optim.micro_batch_size to a divisor of data.batch_size"
            )
        _check_schedule(self.optim, self.optimizer_steps)
        return self


def _check_schedule(o: OptimConfig, total_steps: int) -> None:
    if o.warmup_steps > total_steps:
        raise ValueError(
            f"optim.warmup_steps = {o.warmup_steps} exceeds the {total_steps} optimizer steps of the run "
            f"(run.steps x algorithm.mu); lower optim.warmup_steps or raise run.steps"
        )


Config = RLConfig | SFTConfig
