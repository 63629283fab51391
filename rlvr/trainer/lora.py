"""The trainer's side of `[model.lora]`: adapters on the policy, the base model as the reference policy.

    build the policy -> the rollout engine copies the base weights -> `attach_lora` injects the adapters
    (only they train) -> the reference policy is the same model with its adapters off -> every sync
    sends the merged weights W + scale * B A (`rlvr.models.lora.merged_state_dict`), checked as usual

As in TRL's GRPOTrainer with a peft model, the reference costs no second copy of the weights: it is the
trainer's own model scored under peft's `disable_adapter()`, so its logprobs are the frozen base
model's exactly (the adapted layers then compute `base_layer(x)` alone).  vLLM takes the same merged
tensors through its `update_weights`; sending the adapter alone (vLLM's LoRA requests) is not done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from rlvr.config.lora import LoRAConfig
from rlvr.models import lora

SUPPORTED_KINDS = ("rl", "sft")


def problems(config: Any) -> list[str]:
    """What a config with [model.lora] asks that this version cannot do (empty: fine)."""
    if getattr(config.model, "lora", None) is None:
        return []
    out = []
    if config.kind not in SUPPORTED_KINDS:
        out.append(f"model.lora: LoRA is supported for kind = 'rl' and 'sft' in this version, not {config.kind!r}; "
                   "remove [model.lora]")  # fmt: skip
    parallel = getattr(config, "parallel", None)
    if parallel is not None and parallel.mode == "fsdp2":
        out.append("model.lora with parallel.mode = 'fsdp2' is not supported in this version (its merged-weight "
                   "sync and adapter export read unsharded tensors); use parallel.mode = 'ddp': the frozen base "
                   "needs no optimizer state or gradients, which is most of what FSDP2 would shard")  # fmt: skip
    try:
        lora.require_peft()
    except Exception as exc:  # ConfigError with the install hint
        out.append(str(exc))
    return out


class BaseModelReference:
    """`Engine.score` of the policy's base model: the trainer's LoRA model with its adapters disabled."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, bf16: bool) -> None:
        from rlvr.rollout.hf import HFEngine

        self.model = model
        # the model's own forward (backend "hf"), not the fused copy: that would read the base weights
        # once and go stale; sharing the weights means no copy at all
        self.inner = HFEngine(model, tokenizer, share_weights=True, backend="hf",
                              dtype=torch.bfloat16 if bf16 else None)  # fmt: skip
        self.version = 0  # never updated: the reference is frozen

    def score(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
              temperature: float = 1.0, top_k: int = 0) -> list[Any]:  # fmt: skip
        was_training = self.model.training
        self.model.eval()  # as the copied reference: no dropout
        try:
            with lora.adapters_disabled(self.model):
                return self.inner.score(prompts, completions, temperature=temperature, top_k=top_k)
        finally:
            self.model.train(was_training)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("the LoRA reference policy only scores; sample from the rollout engine")

    def update_weights(self, *args: Any, **kwargs: Any) -> int:
        raise TypeError("the LoRA reference policy is the frozen base model; it takes no weight update")


def attach_lora(cfg: LoRAConfig, model: nn.Module, tokenizer: Any, *, reference: bool,
                bf16: bool) -> BaseModelReference | None:  # fmt: skip
    """Inject the adapters into `model` in place (call it after the rollout engine copied the base
    weights); the reference engine over the base model when `reference`, else None."""
    lora.apply_lora(model, cfg)
    model.train()
    return BaseModelReference(model, tokenizer, bf16=bf16) if reference else None


def eval_engine(model: nn.Module, tokenizer: Any) -> Any:
    """The engine an engine-less stage (SFT) evaluates a LoRA model with: the model's own forward over
    the shared weights (the fused decode path would read the base weights and miss the adapters)."""
    from rlvr.rollout.hf import HFEngine

    return HFEngine(model, tokenizer, share_weights=True, backend="hf")
