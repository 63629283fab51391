"""`[model.lora]`: train low-rank adapters (LoRA, Hu et al. 2021) through `peft` instead of every weight.

    [model.lora]            # present = on; every key has a default
    r = 16
    alpha = 32
    target_modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

Each targeted linear layer W [out, in] gains A [r, in] (random) and B [out, r] (zeros), so training starts
at the base model; its output is W x + scale * B (A dropout(x)) with scale = alpha / r (alpha / sqrt(r)
with `rslora`).  Only A and B are trained and given to the optimizer; the reference policy is the base
model with the adapters switched off (no second copy of the weights); the rollout engine receives the
merged weights W + scale * B A under the base model's parameter names.  `rlvr.models.lora` does the work.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# the attention and MLP projections of Llama / Mistral / Qwen2 / Qwen3 (and the embedded tiny model)
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRAConfig(BaseModel):
    """Rank, scale, dropout and target modules of the adapters (checked against the model when it loads)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    r: int = Field(default=16, ge=1)  # adapter rank
    alpha: float = Field(default=32.0, gt=0)  # scale = alpha / r
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)  # on the adapter's input, training only
    # leaf names of the linear layers that get adapters; an unknown name is an error listing the model's own
    target_modules: tuple[str, ...] = DEFAULT_TARGETS
    rslora: bool = False  # rank-stabilised scale alpha / sqrt(r) (Kalajdzievski 2023)

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("model.lora.target_modules is empty: name at least one linear layer (e.g. 'q_proj')")
        if len(set(v)) != len(v):
            raise ValueError(f"model.lora.target_modules lists a name twice: {list(v)}")
        return v

    @property
    def scale(self) -> float:
        return self.alpha / (self.r**0.5 if self.rslora else self.r)
