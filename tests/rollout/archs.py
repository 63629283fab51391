"""Tiny Llama-family models for the rollout tests: llama, qwen2 (q/k/v biases), qwen3 (q/k norms), with
biases and norm weights perturbed so that a dropped bias or norm shows."""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM


def build_arch(kind: str, tok: Any, **shape: Any) -> torch.nn.Module:
    """A seeded random `kind` ("llama", "qwen2", "qwen3") of `shape` (config kwargs), in eval mode."""
    torch.manual_seed(0)
    common = dict(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **shape)
    if kind == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    elif kind == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif kind == "qwen3":
        from transformers import Qwen3Config, Qwen3ForCausalLM

        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    else:
        raise ValueError(kind)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:  # HF initialises these to 0 / 1: make them matter
                p.add_(torch.randn_like(p) * 0.2)
    return model.eval()
