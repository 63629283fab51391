"""The stage configs, one per `kind`, with the checks that span sections.

A stage is a config section plus a state and a step function (`rlvr.trainer.stages`); the top-level
`kind` key picks the stage.  Every check raises ValueError whose message names the key(s) and what to
change; `load_config` turns it into a `ConfigError`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlvr.config.distill import DistillConfig
from rlvr.config.parallel import ParallelConfig
from rlvr.config.parts import (
    GROUP_RELATIVE,
    K1KL,
    KL,
    ON_POLICY_ONLY,
    REFERENCE_FREE,
    EntropyConfig,
    PPOClipObjective,
    PreferenceLoss,
    SigmoidDPOLoss,
)
from rlvr.config.sections import (
    AdamWConfig,
    AlgorithmConfig,
    CriticConfig,
    DPODataConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    PPOSection,
    RewardDataConfig,
    RewardPartConfig,
    RolloutConfig,
    RunConfig,
    SFTDataConfig,
    TaskConfig,
)


class _Top(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    @model_validator(mode="after")
    def _packing_is_rl(self) -> Any:
        optim, kind = getattr(self, "optim", None), getattr(self, "kind", None)
        if optim is not None and getattr(optim, "packing", False) and kind != "rl":
            hint = "use data.packing" if kind == "sft" else "set optim.packing = false"
            raise ValueError(f"optim.packing packs RL micro-batches (kind = 'rl'), not kind = {kind!r}: {hint}")
        return self


class RLConfig(_Top):
    """kind = "rl": GRPO-family RL on verifiable rewards (`rlvr train`)."""

    kind: Literal["rl"] = "rl"
    model: ModelConfig = Field(default_factory=ModelConfig)
    # one task, or a weighted mixture: `[task]` is shorthand for a one-row `[[tasks]]`
    tasks: tuple[TaskConfig, ...] = Field(min_length=1)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    reward_model: RewardPartConfig = Field(default_factory=RewardPartConfig)  # a trained RM as a reward part
    optim: OptimConfig = Field(default_factory=AdamWConfig)
    run: RunConfig = Field(default_factory=lambda: RunConfig(out_dir="runs/rl"))
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)  # torchrun data parallelism
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _one_task(cls, data: Any) -> Any:
        if isinstance(data, dict) and "task" in data:
            if "tasks" in data:
                raise ValueError("give either [task] (one task) or [[tasks]] (a mixture), not both")
            data = {**data, "tasks": [data["task"]]}
            del data["task"]
        return data

    @model_validator(mode="before")
    @classmethod
    def _off_policy_corrects(cls, data: Any) -> Any:
        """When vLLM samples (its kernels are not the trainer's) or rollout.max_staleness > 0 (batches from
        older weights), truncated IS (`algorithm.correction = "tis"`, cap 2) is the default: the batch is
        off-policy.  Resolved into config.json."""
        rollout = data.get("rollout") if isinstance(data, dict) else None
        if rollout is None or (_engine_type(rollout) != "vllm" and not _get(rollout, "max_staleness", 0)):
            return data
        algorithm = data.get("algorithm", {})
        if isinstance(algorithm, dict) and "correction" not in algorithm:
            data = {**data, "algorithm": {**algorithm, "correction": {"type": "tis"}}}
        return data

    @property
    def task(self) -> TaskConfig:
        """The task of a one-task run (mixtures: use `tasks`)."""
        if len(self.tasks) != 1:
            raise AttributeError(f"this run mixes {len(self.tasks)} tasks; read config.tasks")
        return self.tasks[0]

    @property
    def optimizer_steps(self) -> int:
        return self.run.steps * self.algorithm.mu

    @property
    def micro_batches_per_step(self) -> int:
        return self.rollout.samples_per_step // self.optim.micro_batch_size

    @model_validator(mode="after")
    def _check(self) -> RLConfig:
        problems = _rl_problems(self)
        if problems:
            raise ValueError("\n".join(problems))
        return self


def _get(section: Any, key: str, default: Any = None) -> Any:
    return section.get(key, default) if isinstance(section, dict) else getattr(section, key, default)


def _engine_type(rollout: Any) -> Any:
    """rollout.engine.type of raw or validated config data (a string is the engine's shorthand)."""
    engine = rollout.get("engine") if isinstance(rollout, dict) else getattr(rollout, "engine", None)
    return engine if isinstance(engine, str) else (engine.get("type") if isinstance(engine, dict)
                                                   else getattr(engine, "type", None))  # fmt: skip


def _rl_problems(c: RLConfig) -> list[str]:
    r, a, o = c.rollout, c.algorithm, c.optim
    out = []
    if r.samples_per_step % o.micro_batch_size:
        out.append(
            f"rollout.prompts_per_step * rollout.group_size = {r.prompts_per_step} * {r.group_size} = "
            f"{r.samples_per_step} is not divisible by optim.micro_batch_size = {o.micro_batch_size}; "
            f"set optim.micro_batch_size to a divisor of {r.samples_per_step}"
        )
    if r.group_size == 1 and (a.advantage.type in GROUP_RELATIVE or a.dynamic_sampling):
        what = "algorithm.dynamic_sampling" if a.dynamic_sampling else f"algorithm.advantage = {a.advantage.type!r}"
        out.append(
            f"rollout.group_size = 1 with {what}: a group of one sample has zero advantage, so nothing "
            f"is learned; set rollout.group_size >= 2 (e.g. 8) or algorithm.advantage = 'reinforce_pp'"
        )
    if a.kl.placement == "reward" and not a.kl.enabled:
        out.append("algorithm.kl.placement = 'reward' needs algorithm.kl.beta > 0 (e.g. 0.04)")
    if a.kl.adaptive and not a.kl.enabled:
        out.append("algorithm.kl.target (adaptive KL) needs an initial algorithm.kl.beta > 0 (e.g. 0.05)")
    if a.mu > 1 and a.objective.type in ON_POLICY_ONLY:
        out.append(
            f"algorithm.objective = {a.objective.type!r} is on-policy only, but algorithm.mu > 1 reuses the "
            "batch; use algorithm.objective = 'ppo_clip' or set algorithm.mu = 1"
        )
    if r.engine.type == "vllm" and c.parallel.mode != "none":  # seen under torchrun: rank 1 cannot build it
        out.append(
            f"rollout.engine.type = 'vllm' with parallel.mode = {c.parallel.mode!r}: not supported in this version "
            "(each rank would build its own vLLM from an HF export that transformers writes on rank 0 only, and "
            "in-process vLLM starts its own torch.distributed group); set parallel.mode = 'none' and run one "
            "process, or use rollout.engine.type = 'hf' under torchrun"
        )
    if len({(t.name, repr(sorted(t.kwargs.items()))) for t in c.tasks}) < len(c.tasks):
        out.append("[[tasks]]: the same task with the same kwargs appears twice; merge them by weight")
    out.extend(_schedule_problems(o, c.optimizer_steps))
    return out


class SFTConfig(_Top):
    """kind = "sft": supervised fine-tuning on prompt/completion pairs (loss on completion tokens only)."""

    kind: Literal["sft"] = "sft"
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig | None = None
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)
    optim: OptimConfig = Field(default_factory=lambda: AdamWConfig(lr=1e-4))
    run: RunConfig = Field(default_factory=lambda: RunConfig(out_dir="runs/sft"))
    parallel: ParallelConfig = Field(default_factory=ParallelConfig)  # torchrun data parallelism
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def optimizer_steps(self) -> int:
        return self.run.steps

    @model_validator(mode="after")
    def _check(self) -> SFTConfig:
        out = []
        if self.data.path is None and self.task is None:
            out.append(
                "SFT needs data: set data.path to a JSONL file of prompt/completion pairs, "
                "or add a [task] section (name = ...) to train on the task's worked solutions"
            )
        if not self.data.packing and self.data.batch_size % self.optim.micro_batch_size:  # packing: rows
            out.append(
                f"data.batch_size = {self.data.batch_size} is not divisible by optim.micro_batch_size = "
                f"{self.optim.micro_batch_size}; set optim.micro_batch_size to a divisor of data.batch_size"
            )
        if self.run.eval_every and self.task is None:
            out.append("run.eval_every > 0 needs a [task] to evaluate on (or set run.eval_every = 0)")
        out.extend(_schedule_problems(self.optim, self.optimizer_steps))
        if out:
            raise ValueError("\n".join(out))
        return self


class DPOConfig(_Top):
    """kind = "dpo": direct preference optimisation (the DPO family) on file or on-policy pairs."""

    kind: Literal["dpo"] = "dpo"
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig | None = None  # on-policy pairs and evaluation
    data: DPODataConfig = Field(default_factory=DPODataConfig)
    loss: PreferenceLoss = Field(default_factory=SigmoidDPOLoss)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)  # on-policy sampling
    optim: OptimConfig = Field(default_factory=lambda: AdamWConfig(lr=1e-6))
    run: RunConfig = Field(default_factory=lambda: RunConfig(out_dir="runs/dpo"))
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def optimizer_steps(self) -> int:
        return self.run.steps

    @property
    def needs_reference(self) -> bool:
        return self.loss.type not in REFERENCE_FREE

    @model_validator(mode="after")
    def _check(self) -> DPOConfig:
        out = []
        if self.data.path is None and not self.data.onpolicy:
            out.append("DPO needs pairs: set data.path to a JSONL file of prompt/chosen/rejected rows, "
                       "or data.onpolicy = true (with a [task]) to build pairs from verifier outcomes")  # fmt: skip
        if (self.data.onpolicy or self.run.eval_every) and self.task is None:
            out.append("data.onpolicy / run.eval_every need a [task] (its verifier ranks the samples)")
        if self.data.onpolicy and self.rollout.group_size < 2:
            out.append("data.onpolicy needs rollout.group_size >= 2: a pair needs two samples of one prompt")
        if self.rollout.max_staleness:
            out.append("rollout.max_staleness: sampling ahead is for kind = 'rl'; set it to 0 here")
        out.extend(_schedule_problems(self.optim, self.optimizer_steps))
        if out:
            raise ValueError("\n".join(out))
        return self


class RewardModelConfig(_Top):
    """kind = "reward_model": a Bradley-Terry reward model (scalar head at the last token) on pairs."""

    kind: Literal["reward_model"] = "reward_model"
    model: ModelConfig = Field(default_factory=ModelConfig)  # the trunk (usually the SFT checkpoint)
    task: TaskConfig | None = None
    data: RewardDataConfig = Field(default_factory=RewardDataConfig)
    optim: OptimConfig = Field(default_factory=lambda: AdamWConfig(lr=1e-5))
    run: RunConfig = Field(default_factory=lambda: RunConfig(out_dir="runs/reward_model"))
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def optimizer_steps(self) -> int:
        return self.run.steps

    @model_validator(mode="after")
    def _check(self) -> RewardModelConfig:
        out = []
        if self.data.path is None and not self.data.from_task:
            out.append("a reward model needs pairs: set data.path (prompt/chosen/rejected JSONL) or "
                       "data.from_task = true with a [task]")  # fmt: skip
        if (self.data.from_task or self.run.eval_every) and self.task is None:
            out.append("data.from_task / run.eval_every need a [task]")
        if self.run.eval_every:
            out.append("run.eval_every: a reward model is evaluated by its held-out pair accuracy at the end "
                       "(data.heldout_pairs); set run.eval_every = 0")  # fmt: skip
        out.extend(_schedule_problems(self.optim, self.optimizer_steps))
        if out:
            raise ValueError("\n".join(out))
        return self


class PPOConfig(_Top):
    """kind = "ppo": PPO with a value model (critic), GAE, per-token KL in the reward, value clipping."""

    kind: Literal["ppo"] = "ppo"
    model: ModelConfig = Field(default_factory=ModelConfig)
    task: TaskConfig
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    ppo: PPOSection = Field(default_factory=PPOSection)
    objective: PPOClipObjective = Field(default_factory=PPOClipObjective)
    kl: KL = Field(default_factory=lambda: K1KL(beta=0.05, placement="reward"))
    entropy: EntropyConfig = Field(default_factory=EntropyConfig)
    critic: CriticConfig = Field(default_factory=CriticConfig)
    optim: OptimConfig = Field(default_factory=lambda: AdamWConfig(lr=1e-6))
    run: RunConfig = Field(default_factory=lambda: RunConfig(out_dir="runs/ppo"))
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="before")
    @classmethod
    def _kl_defaults(cls, data: Any) -> Any:
        """PPO's KL section defaults to k1 in the reward (Ziegler et al.), not the RL section's k3 in the loss."""
        if isinstance(data, dict) and isinstance(data.get("kl"), dict):
            data = {**data, "kl": {"type": "k1", "placement": "reward", **data["kl"]}}
        return data

    @property
    def optimizer_steps(self) -> int:
        return self.run.steps * self.ppo.mu

    @model_validator(mode="after")
    def _check(self) -> PPOConfig:
        out = []
        if self.kl.enabled and self.kl.placement != "reward":
            out.append("kl.placement: PPO puts the KL in the per-token reward; set kl.placement = 'reward'")
        if self.rollout.max_staleness:
            out.append("rollout.max_staleness: sampling ahead is for kind = 'rl'; set it to 0 here")
        if self.rollout.samples_per_step % self.optim.micro_batch_size:
            out.append(f"rollout.prompts_per_step * rollout.group_size = {self.rollout.samples_per_step} is not "
                       f"divisible by optim.micro_batch_size = {self.optim.micro_batch_size}")  # fmt: skip
        out.extend(_schedule_problems(self.optim, self.optimizer_steps))
        if out:
            raise ValueError("\n".join(out))
        return self


def _schedule_problems(o: Any, total_steps: int) -> list[str]:
    if o.warmup_steps > total_steps:
        return [
            f"optim.warmup_steps = {o.warmup_steps} exceeds the {total_steps} optimizer steps of the run "
            f"(run.steps x algorithm.mu); lower optim.warmup_steps or raise run.steps"
        ]
    return []


Config = RLConfig | SFTConfig | DPOConfig | RewardModelConfig | PPOConfig | DistillConfig
STAGES: dict[str, type[BaseModel]] = {"rl": RLConfig, "sft": SFTConfig, "dpo": DPOConfig,
                                      "reward_model": RewardModelConfig, "ppo": PPOConfig,
                                      "distill": DistillConfig}  # fmt: skip
# kinds the stage design has room for; a config naming one gets told where it stands
PLANNED_STAGES: dict[str, str] = {}
