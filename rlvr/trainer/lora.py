"""The trainer's side of `[model.lora]`: adapters on the policy, the base model as the reference policy.

    build the policy -> the rollout engine copies the base weights -> `attach_lora` injects the adapters
    (only they train) -> the reference policy is the same model with its adapters off -> every sync
    sends the merged weights W + scale * B A (`rlvr.models.lora.merged_state_dict`), checked as usual

As in TRL's GRPOTrainer with a peft model, the reference costs no second copy of the weights: it is the
trainer's own model scored under peft's `disable_adapter()`, so its logprobs are the frozen base
model's exactly (the adapted layers then compute `base_layer(x)` alone).  Under FSDP2 the merged
weights are computed from the gathered state dict (`rlvr.trainer.sync`).  vLLM takes the same merged
tensors through its `update_weights`; sending the adapter alone (vLLM's LoRA requests) is not done.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from rlvr.config import ConfigError
from rlvr.config.lora import LoRAConfig
from rlvr.models import lora
from rlvr.rollout.base import TokenScores
from rlvr.trainer.batching import Sample, collate
from rlvr.trainer.forward import completion_logprobs_no_grad

SUPPORTED_KINDS = ("rl", "sft")


def problems(config: Any) -> list[str]:
    """What a config with [model.lora] asks that this version cannot do (empty: fine)."""
    if getattr(config.model, "lora", None) is None:
        return []
    out = []
    if config.kind not in SUPPORTED_KINDS:
        out.append(f"model.lora: LoRA is supported for kind = 'rl' and 'sft' in this version, not {config.kind!r}; "
                   "remove [model.lora]")  # fmt: skip
    try:
        lora.require_peft()
    except ConfigError as exc:  # the install hint
        out.append(str(exc))
    return out


class BaseModelReference:
    """`Engine.score` of the policy's base model: the trainer's LoRA model with its adapters disabled,
    run through the trainer's own forward (so through the DDP / FSDP2 wrapper: under FSDP2 every rank
    scores its equal share in the same number of chunks, so the all-gathers pair up)."""

    def __init__(self, model: nn.Module, tokenizer: Any, *, bf16: bool, rows: int = 16) -> None:
        self.model, self.pad_id, self.autocast, self.rows = model, tokenizer.pad_token_id, bf16, rows
        self.version = 0  # never updated: the reference is frozen

    def score(self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
              temperature: float = 1.0, top_k: int = 0) -> list[TokenScores]:  # fmt: skip
        if top_k:
            raise TypeError("the LoRA reference policy scores the sampled tokens only (top_k = 0)")
        if len(prompts) != len(completions):
            raise ValueError(f"score got {len(prompts)} prompts but {len(completions)} completions")
        out: list[TokenScores] = []
        was_training = self.model.training
        self.model.eval()  # as the copied reference: no dropout
        try:
            with lora.adapters_disabled(self.model):
                for c in range(0, len(prompts), self.rows):
                    chunk = [Sample(tuple(p), tuple(t)) for p, t in zip(prompts[c : c + self.rows],
                                                                         completions[c : c + self.rows])]  # fmt: skip
                    lp = completion_logprobs_no_grad(self.model, collate(chunk, self.pad_id),
                                                     temperature=temperature, autocast=self.autocast)  # [B, C]
                    out.extend(TokenScores(tuple(lp[r, : len(s.completion_ids)].tolist())) for r, s in enumerate(chunk))
        finally:
            self.model.train(was_training)
        return out

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
