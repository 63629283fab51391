"""Decode backends for `HFEngine`: how a batch of left-padded prompts becomes next-token logits.

Both backends prefill each distinct prompt ONCE and then expand its KV cache to the `n` samples
of its group (row `p * n + j` is sample `j` of prompt `p`), so a group of 8 costs one prefill.

- `FastLlamaBackend`: a lean forward for Llama-family models (llama, mistral, qwen2, qwen3) over
  the engine's own fused weights (`fused.FusedLlama`: q/k/v and gate/up concatenated, prepacked
  for oneDNN on CPU, fused norm / RoPE / SwiGLU), a KV cache `[B, H_kv, S_max, D]` per layer
  allocated once per batch (attention reads exactly the slots written so far), a precomputed RoPE
  table and one boolean key mask; no per-step cache objects, 4-D mask builders or allocations
  beyond the ops' outputs.
- `HFCacheBackend`: the model's own `forward` with a `DynamicCache` (any causal LM).  It is the
  simple reference path the fast one is tested against, and the fallback for other architectures.

Left padding: a prompt's positions count from its first real token (`cumsum(mask) - 1`), pad keys
are masked out, and every query may attend to itself so fully padded rows stay finite.
"""

from __future__ import annotations

from typing import Protocol

import torch
from transformers import DynamicCache, PreTrainedModel

from rlvr.rollout.fused import FusedLlama, rope_tables

FAST_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})


class DecodeBackend(Protocol):
    def start(self, ids: torch.Tensor, mask: torch.Tensor, n: int, max_new: int) -> torch.Tensor:
        """Prefill prompts `ids`/`mask` [P, Lp]; return next-token logits [P * n, V] (float32)."""
        ...

    def step(self, tokens: torch.Tensor, i: int) -> torch.Tensor:
        """Feed generated token `i` of every row (`tokens` [B]); return the next logits [B, V]."""
        ...


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:  # [B, T] bool -> [B, T] long
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def fast_path_supported(model: PreTrainedModel) -> bool:
    """Whether `FastLlamaBackend` reproduces `model`'s forward (Llama-style blocks, global attention)."""
    cfg = model.config
    if cfg.model_type not in FAST_MODEL_TYPES:
        return False
    if getattr(cfg, "use_sliding_window", False) or (
        cfg.model_type == "mistral" and getattr(cfg, "sliding_window", None)
    ):
        return False
    if getattr(cfg, "hidden_act", "silu") != "silu":  # FusedLlama's MLP is SwiGLU
        return False
    rope = getattr(cfg, "rope_parameters", None) or {}
    return rope.get("rope_type", "default") in {"default", "linear", "llama3", "yarn"}


class FastLlamaBackend:
    """Lean Llama-family forward (`fused.FusedLlama`) with a KV cache preallocated once per batch."""

    def __init__(self, model: PreTrainedModel, fused: FusedLlama | None = None) -> None:
        self.model = model
        self.fused = fused if fused is not None else FusedLlama.from_model(model)

    def prepare(self, max_len: int, like: torch.Tensor) -> None:
        self.cos, self.sin_rot = rope_tables(self.model, max_len, like)

    def forward(
        self,
        ids: torch.Tensor,  # [B, T]
        pos: torch.Tensor,  # [B, T]
        attn_mask: torch.Tensor,  # [B, 1, T, S] bool, True = may attend
        cache: list[tuple[torch.Tensor, torch.Tensor]] | None,  # per layer k, v [B, H_kv, S_max, D]
        start: int,  # cache slot of ids[:, 0]
    ) -> torch.Tensor:  # hidden states after the final norm [B, T, H]
        if cache is None:  # scoring: a throwaway cache of exactly this width
            cache = [self._alloc(ids.shape[0], ids.shape[1], self.cos.dtype, ids.device) for _ in self.fused.layers]
        return self.fused.forward(ids, self.cos[pos], self.sin_rot[pos], attn_mask, cache, start)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:  # [..., H] -> [..., V] float32
        return self.model.lm_head(hidden).float()

    def start(self, ids: torch.Tensor, mask: torch.Tensor, n: int, max_new: int) -> torch.Tensor:
        P, Lp = ids.shape
        dtype = self.fused.embed.dtype
        self.prepare(Lp + max_new, torch.empty(0, dtype=dtype, device=ids.device))
        pos = positions_from_mask(mask)
        small = [self._alloc(P, Lp, dtype, ids.device) for _ in self.fused.layers]
        hidden = self.forward(ids, pos, prefill_mask(mask), small, 0)
        B, S_max = P * n, Lp + max_new
        self.cache = [self._alloc(B, S_max, dtype, ids.device) for _ in self.fused.layers]
        for (kc, vc), (ks, vs) in zip(self.cache, small):
            kc[:, :, :Lp] = ks.repeat_interleave(n, 0)
            vc[:, :, :Lp] = vs.repeat_interleave(n, 0)
        self.key_mask = torch.zeros(B, S_max, dtype=torch.bool, device=ids.device)
        self.key_mask[:, :Lp] = mask.repeat_interleave(n, 0)
        self.next_pos = pos[:, -1].repeat_interleave(n, 0) + 1  # [B]
        self.Lp = Lp
        return self.logits(hidden[:, -1]).repeat_interleave(n, 0)

    def step(self, tokens: torch.Tensor, i: int) -> torch.Tensor:
        slot = self.Lp + i  # cache slot of this token; attention reads slots [0, slot]
        self.key_mask[:, slot] = True
        attn_mask = self.key_mask[:, None, None, : slot + 1]
        hidden = self.forward(tokens[:, None], (self.next_pos + i)[:, None], attn_mask, self.cache, slot)
        return self.logits(hidden[:, -1])

    def _alloc(self, B: int, S: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        shape = (B, self.fused.n_kv, S, self.fused.head_dim)
        return torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device)


def prefill_mask(mask: torch.Tensor) -> torch.Tensor:  # [B, T] bool -> [B, 1, T, T] bool
    """Causal mask over real keys; each query also sees itself (keeps padded rows finite)."""
    T = mask.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=mask.device)
    return ((causal[None] & mask[:, None, :]) | eye[None])[:, None]


class HFCacheBackend:
    """The model's own forward with a DynamicCache: simple, general, slower per token."""

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model

    def start(self, ids: torch.Tensor, mask: torch.Tensor, n: int, max_new: int) -> torch.Tensor:
        pos = positions_from_mask(mask)
        cache = DynamicCache(config=self.model.config)
        out = self.model(input_ids=ids, attention_mask=mask.long(), position_ids=pos, past_key_values=cache)
        self.cache = out.past_key_values
        self.cache.batch_repeat_interleave(n)
        gen_mask = torch.ones(ids.shape[0] * n, max_new, dtype=torch.long, device=ids.device)
        self.mask = torch.cat([mask.long().repeat_interleave(n, 0), gen_mask], dim=1)
        self.next_pos = pos[:, -1].repeat_interleave(n, 0) + 1
        self.Lp = ids.shape[1]
        return out.logits[:, -1].float().repeat_interleave(n, 0)

    def step(self, tokens: torch.Tensor, i: int) -> torch.Tensor:
        out = self.model(
            input_ids=tokens[:, None],
            attention_mask=self.mask[:, : self.Lp + i + 1],
            position_ids=(self.next_pos + i)[:, None],
            past_key_values=self.cache,
        )
        return out.logits[:, -1].float()
