"""One pydantic model per concern.  Each default lives once, on its field; derived values are properties.

Unknown keys are rejected (`extra="forbid"`) so a typo fails before any model loads.  Algorithm names
(advantage, objective, KL estimator, aggregation) are checked against the registry by the trainer's
`build.validate` (this layer may not import `rlvr.algorithms`), also before any model loads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rlvr.config.lora import LoRAConfig
from rlvr.config.parts import (
    K3KL,
    KL,
    Advantage,
    Aggregation,
    Correction,
    EntropyConfig,
    GRPOAdvantage,
    NoCorrection,
    Objective,
    PPOClipObjective,
    TokenMean,
    _typed,
)

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
    # fewer-pass RMSNorm / RoPE / SwiGLU / eager attention on the trainer's model (rlvr.models.kernels);
    # "auto": on CPU for Llama / Qwen2 / Qwen3 / Mistral (measured faster, tested equal), off otherwise
    fused_kernels: bool | Literal["auto"] = "auto"
    lora: LoRAConfig | None = None  # [model.lora]: train LoRA adapters only (rlvr.config.lora); None: every weight

    @property
    def is_tiny(self) -> bool:
        return self.path is None


class TaskConfig(Section):
    """A task from `rlvr.tasks.TASKS` with its constructor kwargs; sizes cap the splits (None: all)."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)
    weight: float = Field(default=1.0, gt=0)  # sampling weight in a mixture ([[tasks]]; Tulu 3 mixes RL data)
    train_size: int | None = Field(default=None, ge=1)
    test_size: int | None = Field(default=None, ge=1)


class HFEngineConfig(Section):
    """rlvr's own batched decode loop over the policy's HF model (a weight copy in the engine's dtype)."""

    type: Literal["hf"] = "hf"
    max_batch_size: int = Field(default=64, ge=1)  # rows (prompts x samples) decoded together
    backend: Literal["auto", "fast", "hf"] = "auto"  # "fast": preallocated-KV Llama/Qwen path
    check_every: int = Field(default=8, ge=1)  # decode steps between host checks for early stop
    # after every weight update, compare the engine's logprobs of one sampled completion with the
    # trainer's (fp32: max |diff| <= 1e-3 nats/token; bf16: mean <= 5e-2); a mismatch stops the run
    check_sync: bool = True


class FakeEngineConfig(Section):
    """Deterministic scripted/pseudo-random completions (tests, dry runs): no model is sampled."""

    type: Literal["fake"] = "fake"
    seed: int = 0
    check_sync: bool = False  # its logprobs are a fixed function, not the policy's


class VLLMEngineConfig(Section):
    """vLLM (`pip install vllm`; on CPU vLLM's CPU build in its own environment, see `.ci/run`), colocated
    in the trainer's process; `rlvr.rollout.vllm` says what it does and how its logprobs are defined."""

    type: Literal["vllm"] = "vllm"
    # "colocated": an LLM in the trainer's process (default); "server": vLLM's OpenAI-compatible server as a
    # subprocess (weights through a shared directory), which lets rollout.max_staleness > 0 overlap training
    mode: Literal["colocated", "server"] = "colocated"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # "auto": the saved model's dtype
    gpu_memory_utilization: float = Field(default=0.3, gt=0, le=1)  # GPU share for weights + KV (colocated)
    kv_cache_bytes: int | None = Field(default=None, ge=1 << 20)  # None: the memory share on GPU, 256 MiB on CPU
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = Field(default=None, ge=2)  # None: the model's max_position_embeddings
    enforce_eager: bool = True  # no CUDA graphs / torch.compile (starts in seconds; False for long GPU runs)
    sleep_mode: bool = False  # GPU: offload weights and free the KV cache while the trainer steps
    seed: int = 0  # added to run.seed for vLLM's own seed (per-request seeds come from the step)
    check_sync: bool = True  # as [rollout.engine] hf: the engine's logprobs checked after every update

    @model_validator(mode="after")
    def _check(self) -> VLLMEngineConfig:
        if self.sleep_mode and self.mode == "server":
            raise ValueError("rollout.engine.sleep_mode is for mode = 'colocated' (a server keeps its own device)")
        return self


EngineConfig = _typed("hf", HFEngineConfig, FakeEngineConfig, VLLMEngineConfig, custom=None)


class RolloutConfig(Section):
    """How completions are sampled: `prompts_per_step` prompts, `group_size` samples each."""

    engine: EngineConfig = Field(default_factory=HFEngineConfig)  # [rollout.engine] type = "hf" | "fake" | "vllm"
    group_size: int = Field(default=8, ge=1)
    prompts_per_step: int = Field(default=4, ge=1)
    temperature: float = Field(default=1.0, gt=0)
    top_p: float = Field(default=1.0, gt=0, le=1)
    top_k: int = Field(default=0, ge=0)
    max_prompt_len: int = Field(default=256, ge=1)
    max_new_tokens: int = Field(default=128, ge=1)
    min_new_tokens: int = Field(default=0, ge=0)  # > 0 forces fixed-length generation (benchmarks)
    # > 0: batch t is sampled by the weights after step t - 1 - max_staleness, ahead of time (overlapping
    # training when the engine runs in its own process); 0: the synchronous loop (rlvr.trainer.async_rollout)
    max_staleness: int = Field(default=0, ge=0)

    @property
    def samples_per_step(self) -> int:
        return self.group_size * self.prompts_per_step


class AlgorithmConfig(Section):
    """The RL objective, composed from parts that each own their settings (see `rlvr.config.parts`),
    and the loop-level choices: updates per batch, DAPO dynamic sampling and overlong masking."""

    advantage: Advantage = Field(default_factory=GRPOAdvantage)
    objective: Objective = Field(default_factory=PPOClipObjective)
    kl: KL = Field(default_factory=K3KL)
    entropy: EntropyConfig = Field(default_factory=EntropyConfig)
    aggregation: Aggregation = Field(default_factory=TokenMean)
    correction: Correction = Field(default_factory=NoCorrection)  # sampler/trainer mismatch
    mu: int = Field(default=1, ge=1)  # optimizer updates per sampled batch
    dynamic_sampling: bool = False  # DAPO: drop zero-variance groups and sample more prompts
    max_sampling_tries: int = Field(default=4, ge=1)
    mask_truncated: bool = False  # DAPO overlong filtering: truncated completions get no loss

    @property
    def needs_reference(self) -> bool:
        return self.kl.enabled

    @property
    def needs_old_logprobs_pass(self) -> bool:
        """A separate no-grad forward is needed only when the batch is reused (mu > 1)."""
        return self.mu > 1


class _OptimBase(Section):
    """Schedule, clipping and gradient accumulation (micro-batching), shared by every optimizer."""

    lr: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    schedule: Literal["constant", "cosine", "step"] = "constant"
    min_lr_ratio: float = Field(default=0.0, ge=0, le=1)  # cosine floor as a fraction of lr
    decay_every: int = Field(default=100, ge=1)  # step schedule: multiply by decay_gamma every N steps
    decay_gamma: float = Field(default=0.5, gt=0, le=1)
    grad_clip: float | None = Field(default=1.0, gt=0)
    micro_batch_size: int = Field(default=8, ge=1)  # sequences per forward/backward
    bucket_by_length: bool = True  # group similar lengths into micro-batches (less padding)
    # kind = "rl": pack each group's prompt once and its completions after it into rows of pack_len tokens
    # (rlvr/trainer/rl_packing.py; the loss is unchanged); micro-batches are then formed by token slots,
    # at most micro_batch_size x the step's longest sequence.  SFT packs with data.packing.
    packing: bool = False
    pack_len: int | None = Field(default=None, ge=2)  # tokens per packed row; None: see rl_packing.default_row_len


class AdamWConfig(_OptimBase):
    """torch.optim.AdamW (Loshchilov & Hutter 2019)."""

    type: Literal["adamw"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)


class MuonConfig(_OptimBase):
    """torch.optim.Muon on hidden 2-D matrices, AdamW (betas, eps) on embeddings, head, norms."""

    type: Literal["muon"] = "muon"
    momentum: float = Field(default=0.95, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(default=1e-8, gt=0)


class SOAPConfig(_OptimBase):
    """SOAP (Vyas et al. 2024) from `heavyball` (pip install "rlvr[optim]")."""

    type: Literal["soap"] = "soap"
    betas: tuple[float, float] = (0.9, 0.95)
    shampoo_beta: float = Field(default=0.95, ge=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    precondition_frequency: int = Field(default=2, ge=1)
    max_precond_dim: int = Field(default=2048, ge=1)


class KLShampooConfig(SOAPConfig):
    """KL-Shampoo (Lin et al. 2025), heavyball's maintained Shampoo variant (pip install "rlvr[optim]")."""

    type: Literal["kl_shampoo"] = "kl_shampoo"  # type: ignore[assignment]


OptimConfig = _typed("adamw", AdamWConfig, MuonConfig, SOAPConfig, KLShampooConfig, custom=None)


class RunConfig(Section):
    """Where and how long: output directory, steps, seed, and the logging/eval/checkpoint cadence."""

    out_dir: str = "runs/run"
    steps: int = Field(default=100, ge=1)
    seed: int = 0
    eval_every: int = Field(default=0, ge=0)  # > 0: the [eval] section every N steps and at the end; 0: never
    save_every: int = Field(default=0, ge=0)  # 0: checkpoint only at the end (and on SIGTERM/SIGINT)
    keep_last: int = Field(default=2, ge=1)
    samples_every: int = Field(default=10, ge=0)  # 0: never write samples.jsonl
    max_consecutive_skips: int = Field(default=3, ge=1)  # non-finite updates in a row before stopping
    threads: int | None = Field(default=None, ge=1)  # torch.set_num_threads; None: torch's default
    progress: bool = True  # tqdm bar on the console
    tensorboard: bool = True  # when the tensorboard package is installed

    @field_validator("out_dir")
    @classmethod
    def _a_directory(cls, value: str) -> str:
        if not value.strip():  # Path("") is the current directory: a run would write among its files
            raise ValueError("is empty: set it to the directory the run writes (e.g. runs/my_run)")
        return value


class EvalConfig(Section):
    """Held-out evaluation during training (every `run.eval_every` steps): results in run_dir/eval/."""

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


class DPODataConfig(Section):
    """Preference pairs: from a JSONL file (`path`, field names below), built on-policy from verifier
    outcomes (`onpolicy`: sample rollout.group_size completions per prompt, pair a higher-reward with a
    lower-reward one), or both mixed each step (Tulu 3 mixed on- and off-policy pairs)."""

    path: str | None = None
    prompt_field: str = "prompt"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    pairs_per_step: int = Field(default=8, ge=1)  # file pairs per optimizer step
    onpolicy: bool = False
    pairs_per_prompt: int = Field(default=1, ge=1)  # on-policy: at most this many pairs from one group
    max_len: int = Field(default=512, ge=2)  # prompt + completion tokens; longer completions are cut


class RewardDataConfig(Section):
    """Preference pairs for a reward model: a JSONL file (`path`, field names below) and/or pairs the
    task's verifier labels (`from_task`: its worked solution vs the same solution with a deliberate slip,
    kept only where the verifier scores the first higher)."""

    path: str | None = None
    prompt_field: str = "prompt"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    from_task: bool = False
    batch_size: int = Field(default=16, ge=1)  # pairs per optimizer step
    max_len: int = Field(default=512, ge=2)  # prompt + completion tokens; longer inputs keep their end
    heldout_pairs: int = Field(default=200, ge=0)  # task test-split pairs for the final preference accuracy
    normalize_samples: int = Field(default=64, ge=0)  # policy samples whose mean reward becomes 0 (0: off)


class RewardPartConfig(Section):
    """A trained reward model as a reward part in RL, next to the verifiers (Score.parts[name])."""

    path: str | None = None  # None: no reward model
    weight: float = 1.0
    name: str = "rm"


class PPOSection(Section):
    """PPO with a value model, by "The N Implementation Details of RLHF with PPO" (Huang et al. 2024)."""

    gamma: float = Field(default=1.0, ge=0, le=1)  # no discounting within a completion (the N-details)
    lam: float = Field(default=0.95, ge=0, le=1)  # GAE lambda (Schulman et al. 2016)
    value_clip: float | None = Field(default=0.2, gt=0)  # PPO2 value clipping; None: plain squared error
    whiten_rewards: bool = False  # scale the step's rewards to unit variance (mean kept)
    whiten_advantages: bool = True  # over the step's valid tokens
    eos_penalty: float | None = -1.0  # the reward of a completion that ends without EOS (None: keep it)
    critic_warmup_steps: int = Field(default=0, ge=0)  # first steps train the critic only
    mu: int = Field(default=1, ge=1)  # PPO epochs over each sampled batch


class CriticConfig(Section):
    """The value model: a scalar head on every position of an LM trunk (a separate model)."""

    path: str | None = None  # None: the policy's own weights with a fresh head (a trained RM dir works too)
    lr: float = Field(default=1e-5, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    grad_clip: float | None = Field(default=1.0, gt=0)
