"""Decode backends for `HFEngine`: how a batch of left-padded prompts becomes next-token logits.

Both backends prefill each distinct prompt ONCE (row `p * n + j` is sample `j` of prompt `p`), so a
group of 8 costs one prefill; the HF-cache backend then copies the prompt's KV to the n rows.

- `FastLlamaBackend`: a lean forward for Llama-family models (llama, mistral, qwen2, qwen3) over
  the engine's own fused weights (`fused.FusedLlama`: q/k/v and gate/up concatenated, prepacked
  for oneDNN on CPU, fused norm / RoPE / SwiGLU).  The prompt's KV cache `[P, H_kv, Lp, D]` per
  layer is kept ONCE per group and each row's generated keys go to a `[B, H_kv, max_new, D]` cache,
  both allocated once per batch; a decode step attends to both in one softmax
  (`fused.SharedPrefixAttention`: the group's rows read their prompt's keys in one matmul, so the
  cache read, which bounds decode attention, holds the prompt once instead of n times).  A
  precomputed RoPE table, no per-step cache objects, 4-D mask builders or allocations beyond the
  ops' outputs.
- `HFCacheBackend`: the model's own `forward` with a `DynamicCache` (any causal LM).  It is the
  simple reference path the fast one is tested against, and the fallback for other architectures.

Left padding: a prompt's positions count from its first real token (`cumsum(mask) - 1`), pad keys
are masked out, and every query may attend to itself so fully padded rows stay finite.
"""

from __future__ import annotations

from typing import Protocol

import torch
from transformers import DynamicCache, PreTrainedModel

from rlvr.models.compat import cache_kwarg, returned_cache
from rlvr.rollout.fused import CacheAttention, FusedLlama, SharedPrefixAttention, rope_tables

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
    if any(hasattr(m, "lora_A") for m in model.modules()):  # peft adapters: the fused copy would read base weights
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

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:  # [..., H] -> [..., V] float32
        return self.model.lm_head(hidden).float()

    def start(self, ids: torch.Tensor, mask: torch.Tensor, n: int, max_new: int) -> torch.Tensor:
        """Prefill the P prompts into a `[P, Hkv, Lp, D]` cache per layer, kept as the groups' shared
        prefix; each row's generated keys go to a `[P * n, Hkv, max_new, D]` cache."""
        P, Lp = ids.shape
        f, dtype = self.fused, self.fused.embed.dtype
        self.cos, self.sin_rot = rope_tables(self.model, Lp + max_new, torch.empty(0, dtype=dtype, device=ids.device))
        pos = positions_from_mask(mask)
        self.prompt = [self._alloc(P, Lp, dtype, ids.device) for _ in f.layers]
        prefill = CacheAttention(self.prompt, prefill_mask(mask), 0, f.scaling)
        hidden = f.forward(ids, self.cos[pos], self.sin_rot[pos], prefill)
        self.gen = [self._alloc(P * n, max_new, dtype, ids.device) for _ in f.layers]
        bias = torch.zeros(P, 1, 1, Lp, dtype=dtype, device=ids.device)
        self.prompt_bias = bias.masked_fill_(~mask[:, None, None, :], float("-inf"))  # each prompt has a real token
        self.next_pos = pos[:, -1].repeat_interleave(n, 0) + 1  # [B]
        self.n = n
        return self.logits(hidden[:, -1]).repeat_interleave(n, 0)

    def step(self, tokens: torch.Tensor, i: int) -> torch.Tensor:
        """Feed generated token i of every row (it goes to slot i of the generated cache)."""
        pos = (self.next_pos + i)[:, None]
        attend = SharedPrefixAttention(self.prompt, self.prompt_bias, self.gen, i, self.n, self.fused.scaling)
        hidden = self.fused.forward(tokens[:, None], self.cos[pos], self.sin_rot[pos], attend)
        return self.logits(hidden[:, -1])

    def _alloc(self, B: int, S: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
        # uninitialised: every slot is written before it is read (prefill fills [0, Lp); decode step i writes
        # slot i, then attends to [0, i]), so zeroing the caches would be a wasted pass (5% of a 1m decode)
        shape = (B, self.fused.n_kv, S, self.fused.head_dim)
        return torch.empty(shape, dtype=dtype, device=device), torch.empty(shape, dtype=dtype, device=device)


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
        self.cache_kw = cache_kwarg(self.model)
        out = self.model(input_ids=ids, attention_mask=mask.long(), position_ids=pos, **{self.cache_kw: cache})
        self.cache = returned_cache(out)
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
            **{self.cache_kw: self.cache},
        )
        return out.logits[:, -1].float()
