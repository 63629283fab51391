"""One pydantic model per concern.  Each default lives once, on its field; derived values are properties.

Unknown keys are rejected (`extra="forbid"`) so a typo fails before any model loads.  Algorithm names
(advantage, objective, KL estimator, aggregation) are checked against the registry by the trainer's
`build.validate` (this layer may not import `rlvr.algorithms`), also before any model loads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PRESETS = ("1m", "5m", "15m", "33m", "50m")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(Section):
    """The policy: a local Hugging Face directory (`path`) or the embedded tiny model (`preset`, `seed`)."""

    path: str | None = None
    preset: Literal["1m", "5m", "15m", "33m", "50m"] = "5m"
    seed: int = 0
    dtype: Literal["float32", "bfloat16"] = "float32"  # master weights; keep float32 with bf16_autocast
    # forward/backward matmuls in bf16, weights and optimizer state in dtype; "auto": only where bf16
    # matmuls are native (CUDA, AVX512-BF16/AMX or Arm BF16 CPUs; emulated bf16 is ~100x slower)
    bf16_autocast: bool | Literal["auto"] = "auto"
    chat_template: bool = False  # render prompts with the tokenizer's chat template
    # trainer attention kernel; "auto": "eager" on CPU (batched matmuls beat CPU SDPA's masked
    # flash kernel ~4x at these lengths), the model's own choice (sdpa / flash) on accelerators
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"

    @property
    def is_tiny(self) -> bool:
        return self.path is None


class TaskConfig(Section):
    """A task from `rlvr.tasks.TASKS` with its constructor kwargs; sizes cap the splits (None: all)."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    train_size: int | None = Field(default=None, ge=1)
    test_size: int | None = Field(default=None, ge=1)


class RolloutConfig(Section):
    """How completions are sampled: `prompts_per_step` prompts, `group_size` samples each."""

    engine: Literal["hf", "fake"] = "hf"
    group_size: int = Field(default=8, ge=1)
    prompts_per_step: int = Field(default=4, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)
    max_prompt_len: int = Field(default=256, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)
    min_new_tokens: int = Field(default=0, ge=0)  # > 0 forces fixed-length generation (benchmarks)

    @property
    def samples_per_step(self) -> int:
        return self.group_size * self.prompts_per_step


class AlgorithmConfig(Section):
    """Advantage estimator, objective, KL and aggregation by registry name, plus their knobs."""

    advantage: str = "grpo"  # rlvr.algorithms.registry.ADVANTAGES or "package.module:function"
    scale_advantages: bool = True  # GRPO divides by the group std (Dr. GRPO: set False)
    objective: str = "ppo_clip"
    clip_low: float = Field(default=0.2, ge=0, lt=1)
    clip_high: float = Field(default=0.2, ge=0)  # DAPO clip-higher: 0.28
    dual_clip: float | None = Field(default=None, gt=1)
    beta: float = Field(default=0.0, ge=0)  # KL coefficient; > 0 scores a frozen reference policy
    kl_estimator: str = "k3"
    kl_in: Literal["loss", "reward"] = "loss"
    aggregation: str = "token_mean"
    mu: int = Field(default=1, ge=1)  # optimizer updates per sampled batch
    dynamic_sampling: bool = False  # DAPO: drop zero-variance groups and sample more prompts
    max_sampling_tries: int = Field(default=4, ge=1)
    mask_truncated: bool = False  # DAPO overlong filtering: truncated completions get no loss
    tis_cap: float | None = Field(default=None, ge=1)  # truncated IS weight cap (Yao et al. 2025: 2.0)
    tis_level: Literal["token", "sequence", "geometric"] = "token"

    @property
    def needs_reference(self) -> bool:
        return self.beta > 0

    @property
    def needs_old_logprobs_pass(self) -> bool:
        """A separate no-grad forward is needed only when the batch is reused or KL enters the reward."""
        return self.mu > 1 or (self.beta > 0 and self.kl_in == "reward")


class OptimConfig(Section):
    """Optimizer, schedule, clipping and gradient accumulation (micro-batching)."""

    name: Literal["adamw", "muon"] = (
        "adamw"  # muon: torch.optim.Muon on hidden 2-D matrices, AdamW on the rest
    )
    lr: float = Field(default=1e-5, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "constant"
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)  # cosine floor as a fraction of lr
    decay_every: int = Field(default=100, ge=1)  # step schedule: multiply by decay_gamma every N steps
    decay_gamma: float = Field(default=0.5, gt=0, le=1)
    grad_clip: float | None = Field(default=1.0, gt=0)
    micro_batch_size: int = Field(default=8, ge=1)  # sequences per forward/backward
    bucket_by_length: bool = True  # group similar lengths into micro-batches (less padding)


class RunConfig(Section):
    """Where and how long: output directory, steps, seed, and the logging/eval/checkpoint cadence."""

    out_dir: str = "runs/run"
    steps: int = Field(default=100, ge=1)
    seed: int = 0
    log_every: int = Field(default=1, ge=1)
    eval_every: int = Field(default=0, ge=0)  # 0: evaluate only at the end (when a callback is given)
    save_every: int = Field(default=0, ge=0)  # 0: checkpoint only at the end (and on SIGTERM/SIGINT)
    keep_last: int = Field(default=2, ge=1)
    samples_every: int = Field(default=10, ge=0)  # 0: never write samples.jsonl
    max_consecutive_skips: int = Field(default=3, ge=1)  # non-finite updates in a row before stopping
    threads: int | None = Field(default=None, ge=1)  # torch.set_num_threads; None: torch's default
    progress: bool = True  # tqdm bar on the console
    tensorboard: bool = True  # when the tensorboard package is installed


class EvalConfig(Section):
    """Held-out evaluation run by the callback the CLI passes in (the trainer only schedules it)."""

    num_examples: int | None = Field(default=None, ge=1)
    samples: int = Field(default=4, ge=1)  # k for pass@k / maj@k
    temperature: float = Field(default=1.0, ge=0)
    max_new_tokens: int | None = Field(default=None, ge=1)  # None: rollout.max_new_tokens


class SFTDataConfig(Section):
    """SFT pairs from a JSONL file (`path`) or from the task's worked solutions (`task` section)."""

    path: str | None = None
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    num_examples: int | None = Field(default=None, ge=1)  # task traces: how many (None: the train split)
    noise: float = Field(default=0.0, ge=0, le=1)  # task traces: fraction with deliberate mistakes
    batch_size: int = Field(default=16, ge=1)  # sequences per optimizer step
    max_len: int = Field(default=512, ge=2)  # prompt + completion tokens; longer pairs are cut
    # concatenate whole sequences into rows of max_len tokens (attention stays within each sequence, the
    # loss is unchanged); optim.micro_batch_size then counts rows, not sequences
    packing: bool = False
