"""kind = "distill": logit (knowledge) distillation and on-policy distillation from a teacher.

    [teacher]  path = "runs/teacher/checkpoints/step_300"   (or preset/seed: the embedded tiny model)
    [distill]  mode = "logit" | "on_policy"

- `logit`: the student trains on fixed sequences (`data.path` pairs, e.g. the teacher's
  rejection-sampled traces from `rlvr distill collect`, or the task's worked solutions) against the
  teacher's distribution at every position: `loss` (forward_kl, reverse_kl, jsd with `beta`) over the
  teacher's `top_k` candidates (0: the whole vocabulary) at `temperature`, plus `hard_weight` x the
  cross-entropy on the teacher's top-1 token.
- `on_policy`: the student samples (`[rollout]`), the teacher scores every sampled token, and
  `estimator = "sampled"` makes log T(y) - log S(y) a per-token advantage of the policy-gradient
  objective (+ `reward_weight` x the GRPO advantage of the verifier reward, one composed objective),
  while `estimator = "topk"` descends the exact reverse KL over the teacher's top-k candidates.

Sequence-level distillation (SFT on the teacher's text) is `kind = "sft"` on the file `rlvr distill
collect` writes; it is the one that works when teacher and student tokenizers differ.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rlvr.config.sections import (
    AdamWConfig,
    EvalConfig,
    ModelConfig,
    OptimConfig,
    RolloutConfig,
    RunConfig,
    SFTDataConfig,
    TaskConfig,
)


class DistillSection(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["logit", "on_policy"] = "on_policy"
    loss: Literal["forward_kl", "reverse_kl", "jsd"] = "forward_kl"  # logit mode (and on_policy "topk": reverse)
    beta: float = Field(default=0.5, ge=0, le=1)  # jsd: the teacher's weight in the mixture (GKD)
    temperature: float = Field(default=1.0, gt=0)  # soft targets (logit mode)
    top_k: int = Field(default=0, ge=0)  # teacher candidates per position; 0: the whole vocabulary
    hard_weight: float = Field(default=0.0, ge=0)  # + this x CE on the teacher's top-1 token (logit mode)
    estimator: Literal["sampled", "topk"] = "sampled"  # on_policy: per-token advantage, or exact top-k KL
    kl_weight: float = Field(default=1.0, ge=0)  # on_policy: the weight of the distillation signal
    reward_weight: float = Field(default=0.0, ge=0)  # on_policy: + this x the verifier reward's GRPO advantage
    # feature matching (logit mode, a resident teacher of the student's family): + feature_weight x the
    # per-token MSE / (1 - cosine) between projected student and teacher hidden states, for each
    # (student layer, teacher layer) pair of layer_map (hidden_states indices: 0 = embeddings, -1 = last)
    feature_weight: float = Field(default=0.0, ge=0)
    feature_loss: Literal["mse", "cosine"] = "mse"
    layer_map: tuple[tuple[int, int], ...] = ((-1, -1),)


class TeacherConfig(BaseModel):
    """The teacher: a local HF directory or rlvr checkpoint (`path`), or the embedded tiny model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    preset: Literal["1m", "5m", "15m", "33m", "50m"] = "5m"
    seed: int = 0
    # logit mode: the teacher's top-k scores of the data, precomputed to this JSONL file (filled with the
    # teacher on the first run, resumable); a run whose data is all in it never loads the teacher
    topk_file: str | None = None


class DistillConfig(BaseModel):
    """kind = "distill" (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    kind: Literal["distill"] = "distill"
    model: ModelConfig = Field(default_factory=ModelConfig)  # the student
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    task: TaskConfig | None = None
    distill: DistillSection = Field(default_factory=DistillSection)
    data: SFTDataConfig = Field(default_factory=SFTDataConfig)  # logit mode's sequences
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)  # on_policy sampling
    optim: OptimConfig = Field(default_factory=lambda: AdamWConfig(lr=1e-4))
    run: RunConfig = Field(default_factory=lambda: RunConfig(out_dir="runs/distill"))
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @property
    def optimizer_steps(self) -> int:
        return self.run.steps

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        d, out = self.distill, []
        if d.mode == "on_policy" and self.task is None:
            out.append("distill.mode = 'on_policy' needs a [task]: the student samples its prompts")
        if d.mode == "logit" and self.data.path is None and self.task is None:
            out.append("distill.mode = 'logit' needs sequences: set data.path (prompt/completion JSONL, e.g. "
                       "from `rlvr distill collect`) or add a [task] to use its worked solutions")  # fmt: skip
        if d.mode == "on_policy" and d.estimator == "sampled" and d.kl_weight == 0 and d.reward_weight == 0:
            out.append("distill.kl_weight and distill.reward_weight are both 0: nothing to learn")
        if self.teacher.topk_file is not None and d.mode != "logit":
            out.append("teacher.topk_file holds scores of fixed sequences: it needs distill.mode = 'logit' "
                       "(on-policy samples are new every step)")  # fmt: skip
        if d.feature_weight and (d.mode != "logit" or self.teacher.topk_file is not None):
            out.append("distill.feature_weight > 0 needs distill.mode = 'logit' and a resident teacher "
                       "(teacher.topk_file stores no hidden states)")  # fmt: skip
        if d.feature_weight and not d.layer_map:
            out.append("distill.layer_map is empty: give (student layer, teacher layer) pairs, e.g. [[-1, -1]]")
        if self.optim.packing:
            out.append("optim.packing packs RL micro-batches (kind = 'rl'), not kind = 'distill': set optim.packing = false")
        if d.reward_weight and self.rollout.group_size < 2:
            out.append("distill.reward_weight > 0 uses GRPO advantages: set rollout.group_size >= 2")
        if self.run.eval_every and self.task is None:
            out.append("run.eval_every > 0 needs a [task] to evaluate on (or set run.eval_every = 0)")
        if self.optim.warmup_steps > self.optimizer_steps:
            out.append(f"optim.warmup_steps = {self.optim.warmup_steps} exceeds run.steps = {self.run.steps}")
        if out:
            raise ValueError("\n".join(out))
        return self
