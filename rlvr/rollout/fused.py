"""The fast decode path's own weights and forward: fused projections, fused elementwise ops.

`FusedLlama.from_model` reads a Llama-family HF model (llama, mistral, qwen2 with its q/k/v biases,
qwen3 with its q/k norms) into the engine's own layout:

- q, k and v concatenated into one `[(Hq + 2 Hkv) D, H]` projection (and their biases, Qwen2),
  gate and up into one `[2 I, H]` projection: 7 matmuls per layer become 4;
- on CPU in fp32, every projection of >= 512 x 512 weights prepacked once for oneDNN (`mkldnn._linear_pointwise`): a
  decode matmul has only B rows, so re-packing the weight on every call (what `F.linear` does)
  is a large part of its cost;
- RMSNorm as the fused `F.rms_norm`, RoPE as one `addcmul` over q and k together (`rotate_half`
  is a roll by D/2 with the sign folded into a precomputed sin table), SwiGLU as an in-place
  `silu_` and `mul_` on the gate half.

Attention is passed in (`Attend`): `CacheAttention` (one cache, SDPA; prefill) or
`SharedPrefixAttention` (decode against a group's shared prompt cache plus each row's own).
The forward is the same function as the HF model's (tests hold tokens and logprobs to the HF-cache
backend within fp32 tolerance); it is rebuilt from the model whenever the weights change, so it
never serves stale weights.  Memory: one extra copy of the decoder weights while it lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Below this many weights a projection is too small for prepacking to pay (1M demo model: measured
# 5-10% slower packed; 33m bench model's 512 x 512 and up: faster).
PACK_MIN_NUMEL = 2**18


def _pack_ok(weight: Tensor) -> bool:
    return (
        weight.numel() >= PACK_MIN_NUMEL
        and weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
    )


class Linear:
    """`x @ weight.T + bias`, with the weight prepacked for oneDNN where that is available."""

    def __init__(self, weight: Tensor, bias: Tensor | None, rows_hint: int = 32) -> None:
        self.bias, self.out_features = bias, weight.shape[0]
        self.packed = None
        if _pack_ok(weight):
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows_hint)
            except RuntimeError:  # an odd oneDNN build: the plain matmul is always right
                self.packed = None
        self.weight = None if self.packed is not None else weight

    def __call__(self, x: Tensor) -> Tensor:  # [..., in] -> [..., out]
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)


def _cat_linear(mods: list[nn.Linear]) -> Linear:
    w = torch.cat([m.weight.detach() for m in mods], dim=0)
    biases = [m.bias for m in mods]
    if all(b is None for b in biases):
        return Linear(w, None)
    b = torch.cat([(m.bias if m.bias is not None else m.weight.new_zeros(m.out_features)).detach() for m in mods])
    return Linear(w, b)


@dataclass
class Norm:
    weight: Tensor
    eps: float

    @classmethod
    def of(cls, mod: nn.Module) -> Norm:
        return cls(mod.weight.detach(), float(getattr(mod, "variance_epsilon", getattr(mod, "eps", 1e-6))))

    def __call__(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


@dataclass
class Layer:
    in_norm: Norm
    qkv: Linear
    o: Linear
    post_norm: Norm
    gate_up: Linear
    down: Linear
    q_norm: Norm | None = None  # qwen3: RMSNorm over each head's q and k before RoPE
    k_norm: Norm | None = None


@dataclass
class FusedLlama:
    embed: Tensor  # [V, H]
    layers: list[Layer]
    norm: Norm
    n_q: int
    n_kv: int
    head_dim: int
    scaling: float

    @classmethod
    def from_model(cls, model: nn.Module) -> FusedLlama:
        layers = []
        for layer in model.model.layers:
            a, m = layer.self_attn, layer.mlp
            layers.append(Layer(
                in_norm=Norm.of(layer.input_layernorm),
                qkv=_cat_linear([a.q_proj, a.k_proj, a.v_proj]),
                o=Linear(a.o_proj.weight.detach(), _bias(a.o_proj)),
                post_norm=Norm.of(layer.post_attention_layernorm),
                gate_up=_cat_linear([m.gate_proj, m.up_proj]),
                down=Linear(m.down_proj.weight.detach(), _bias(m.down_proj)),
                q_norm=Norm.of(a.q_norm) if hasattr(a, "q_norm") else None,
                k_norm=Norm.of(a.k_norm) if hasattr(a, "k_norm") else None,
            ))  # fmt: skip
        cfg, attn0 = model.config, model.model.layers[0].self_attn
        return cls(
            embed=model.model.embed_tokens.weight.detach(),
            layers=layers,
            norm=Norm.of(model.model.norm),
            n_q=cfg.num_attention_heads,
            n_kv=cfg.num_key_value_heads,
            head_dim=attn0.head_dim,
            scaling=float(attn0.scaling),
        )

    def forward(
        self,
        ids: Tensor,  # [B, T]
        cos: Tensor,  # [B, T, D] RoPE tables at each token's position
        sin_rot: Tensor,  # [B, T, D] sin with rotate_half's sign folded in (see `rope_tables`)
        attend: Attend,  # stores each layer's k, v in its cache and attends (`CacheAttention`, `SharedPrefixAttention`)
    ) -> Tensor:  # hidden states after the final norm [B, T, H]
        B, T = ids.shape
        D, nq, nkv = self.head_dim, self.n_q, self.n_kv
        h = F.embedding(ids, self.embed)
        cos, sin_rot = cos[:, :, None], sin_rot[:, :, None]  # broadcast over heads
        for li, layer in enumerate(self.layers):
            qkv = layer.qkv(layer.in_norm(h)).view(B, T, nq + 2 * nkv, D)
            if layer.q_norm is not None:
                qk = torch.cat([layer.q_norm(qkv[:, :, :nq]), layer.k_norm(qkv[:, :, nq : nq + nkv])], dim=2)
            else:
                qk = qkv[:, :, : nq + nkv]
            qk = torch.addcmul(qk * cos, qk.roll(D // 2, dims=-1), sin_rot)  # RoPE on q and k at once
            o = attend(li, qk[:, :, :nq], qk[:, :, nq:], qkv[:, :, nq + nkv :])  # [B, T, Hq * D]
            h = h + layer.o(o)
            gu = layer.gate_up(layer.post_norm(h))
            g, u = gu.chunk(2, dim=-1)
            h = h + layer.down(F.silu(g, inplace=True).mul_(u))
        return self.norm(h)


class Attend(Protocol):
    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q [B, T, Hq, D], k and v [B, T, Hkv, D] of `layer` -> attention output [B, T, Hq * D]."""
        ...


@dataclass
class CacheAttention:
    """Keys and values written to one cache `[B, Hkv, S_max, D]` per layer at slots [start, start + T);
    queries attend to slots [0, start + T) under `mask` [B, 1, T, start + T] (True = may attend)."""

    cache: list[tuple[Tensor, Tensor]]
    mask: Tensor
    start: int
    scale: float

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, T, nq, D = q.shape
        kc, vc = self.cache[layer]
        end = self.start + T
        kc[:, :, self.start : end] = k.transpose(1, 2)
        vc[:, :, self.start : end] = v.transpose(1, 2)
        o = F.scaled_dot_product_attention(
            q.transpose(1, 2), kc[:, :, :end], vc[:, :, :end],
            attn_mask=self.mask, scale=self.scale, enable_gqa=nq != k.shape[2],
        )  # fmt: skip
        return o.transpose(1, 2).reshape(B, T, nq * D)


@dataclass
class SharedPrefixAttention:
    """One decode token per row, the prompt's keys stored ONCE per group.

    Row `p * n + j` is sample j of prompt p.  Its keys are the prompt's, `prompt[layer]` k, v
    `[P, Hkv, Lp, D]` (with `prompt_bias` [P, 1, 1, Lp]: 0, or -inf on left padding), then its own
    generated ones, `gen[layer]` `[B, Hkv, T_max, D]` at slots [0, slot].  The n rows of a group read
    their prompt's keys in one matmul (n query rows per head instead of n one-row products over n
    copies): decode attention is bound by reading the cache, and the prompt is most of it early on.
    One softmax over [prompt keys, generated keys]: the same function as attending over one cache."""

    prompt: list[tuple[Tensor, Tensor]]
    prompt_bias: Tensor
    gen: list[tuple[Tensor, Tensor]]
    slot: int
    n: int
    scale: float

    def __call__(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        B, _, nq, D = q.shape  # T == 1
        (kp, vp), (kg, vg) = self.prompt[layer], self.gen[layer]
        P, nkv, Lp, _ = kp.shape
        n, g, end = self.n, nq // nkv, self.slot + 1
        kg[:, :, self.slot] = k[:, 0]
        vg[:, :, self.slot] = v[:, 0]
        qh = q.view(B, nkv, g, D)  # q head h reads kv head h // g (HF's repeat_kv)
        qp = qh.view(P, n, nkv, g, D).transpose(1, 2).reshape(P, nkv, n * g, D)
        sp = torch.matmul(qp, kp.transpose(-1, -2)).mul_(self.scale).add_(self.prompt_bias)  # [P, Hkv, n g, Lp]
        sp = sp.view(P, nkv, n, g, Lp).transpose(1, 2).reshape(B, nkv, g, Lp)
        sg = torch.matmul(qh, kg[:, :, :end].transpose(-1, -2)).mul_(self.scale)  # [B, Hkv, g, end]
        probs = torch.cat([sp, sg], dim=-1).softmax(dim=-1)
        pp = probs[..., :Lp].reshape(P, n, nkv, g, Lp).transpose(1, 2).reshape(P, nkv, n * g, Lp)
        op = torch.matmul(pp, vp).view(P, nkv, n, g, D).transpose(1, 2).reshape(B, nkv, g, D)
        o = torch.matmul(probs[..., Lp:], vg[:, :, :end]).add_(op)  # [B, Hkv, g, D]
        return o.view(B, 1, nq * D)


def rope_tables(model: nn.Module, length: int, like: Tensor) -> tuple[Tensor, Tensor]:  # [length, D] x2
    """The model's own RoPE cos/sin for positions [0, length), and sin * [-1]*(D/2) + [1]*(D/2):
    `rotate_half(x) * sin == x.roll(D/2) * sin_rot` for HF's `rotate_half` (cat(-x2, x1))."""
    pos = torch.arange(length, device=like.device)[None]
    cos, sin = model.model.rotary_emb(like, pos)  # [1, length, D]
    cos, sin = cos[0].to(like.dtype), sin[0].to(like.dtype)
    half = sin.shape[-1] // 2
    sign = torch.ones(sin.shape[-1], dtype=sin.dtype, device=sin.device)
    sign[:half] = -1
    return cos, sin * sign


def _bias(mod: nn.Linear) -> Tensor | None:
    return None if mod.bias is None else mod.bias.detach()
