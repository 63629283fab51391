"""Fewer-pass RMSNorm, RoPE, SwiGLU and eager attention for the trainer's HF model, in plain PyTorch.

What Liger-Kernel does on GPU with Triton, done here with `torch.autograd.Function`s whose forward and
hand-written backward use fewer elementwise passes and fewer fresh [N, H] / [N, I] temporaries than HF's
eager modules under autograd (on CPU each large temporary is a fresh mmap: page faults on every pass).
Nothing compiles; the weights stay the HF parameters (state_dict keys, `save_pretrained`, LoRA, DDP,
FSDP2, the optimizer and weight sync see the same tensors); only module *instances* are patched.

- RMSNorm: variance in fp32 as HF, `weight * normed.to(input dtype)` as HF; the backward recomputes the
  normed input from (x, rstd) instead of keeping HF's four saved intermediates.
- RoPE: `x * cos + rotate_half(x) * sin` on the two halves (no `cat`), written straight into the
  [B, heads, T, D] layout attention reads (the transpose copy a batched matmul would make anyway), with
  the attention scale folded into cos / sin for the query; backward is the inverse rotation.
- SwiGLU: `silu(gate) * up` with one temporary; saves gate and up only.
- Eager attention: scores `(q * scale) @ k^T`, the additive mask added in place, fp32 softmax, and GQA by
  viewing the query heads of a key/value head as one longer block (no `repeat_kv` copies).

Agreement with HF's forward and every gradient is tested (tests/models/test_kernels.py).  Mixed dtypes
(bf16 autocast: bf16 projections against fp32 cos / sin) take HF's own formulas inside the patched
forwards, so dtypes stay as HF's.
"""

from __future__ import annotations

import inspect
import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUPPORTED = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM", "MistralForCausalLM")
_NORMS = ("LlamaRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm", "MistralRMSNorm")
_MLPS = ("LlamaMLP", "Qwen2MLP", "Qwen3MLP", "MistralMLP")
_ATTENTIONS = ("LlamaAttention", "Qwen2Attention", "Qwen3Attention", "MistralAttention")


# ---------------------------------------------------------------- RMSNorm
class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, eps: float) -> Tensor:
        x32 = x.float()
        rstd = torch.rsqrt(torch.linalg.vector_norm(x32, dim=-1, keepdim=True).square_().div_(x.shape[-1]).add_(eps))
        ctx.save_for_backward(x, weight, rstd)  # [..., 1] fp32 rstd: the backward recomputes x * rstd
        if x.dtype == weight.dtype == torch.float32:
            return torch.mul(x, rstd).mul_(weight)
        normed = x32.mul_(rstd) if x32 is not x else x32 * rstd
        return weight * normed.to(x.dtype)  # HF: the weight multiply in the input dtype (promotes as HF)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, weight, rstd = ctx.saved_tensors
        if not (x.dtype == weight.dtype == grad.dtype == torch.float32):
            return _rms_norm_backward_mixed(ctx, grad, x, weight, rstd)
        normed = x * rstd
        t = grad * normed  # [..., H]
        grad_w = t.sum(tuple(range(t.dim() - 1))) if ctx.needs_input_grad[1] else None
        if not ctx.needs_input_grad[0]:
            return None, grad_w, None
        dot = torch.mv(t.view(-1, t.shape[-1]), weight).view(rstd.shape).div_(x.shape[-1])  # mean(g w n)
        grad_x = torch.mul(grad, weight, out=t).sub_(normed.mul_(dot)).mul_(rstd)  # rstd (g w - n mean(g w n))
        return grad_x, grad_w, None


def _rms_norm_backward_mixed(ctx: Any, grad: Tensor, x: Tensor, weight: Tensor,
                             rstd: Tensor) -> tuple[Tensor | None, Tensor | None, None]:  # fmt: skip
    """The backward through HF's casts: the normed input rounded to x's dtype, the rest in fp32."""
    normed = x.float() * rstd
    grad_w = None
    if ctx.needs_input_grad[1]:
        grad_w = (grad * normed.to(x.dtype)).sum(tuple(range(grad.dim() - 1))).to(weight.dtype)
    if not ctx.needs_input_grad[0]:
        return None, grad_w, None
    gn = (grad * weight).to(x.dtype).float()  # d loss / d normed, rounded as HF's cast rounds it
    dot = (gn * normed).mean(-1, keepdim=True)
    return gn.sub_(normed.mul_(dot)).mul_(rstd).to(x.dtype), grad_w, None


def _rms_norm_forward(self: nn.Module, hidden_states: Tensor) -> Tensor:
    return _RMSNorm.apply(hidden_states, self.weight, self.variance_epsilon)


# ---------------------------------------------------------------- RoPE
def _rotate_into(out: Tensor, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """out = x cos + rotate_half(x) sin on the halves: out1 = x1 c1 - x2 s1, out2 = x2 c2 + x1 s2."""
    d = x.shape[-1] // 2
    x1, x2, o1, o2 = x[..., :d], x[..., d:], out[..., :d], out[..., d:]
    torch.mul(x1, cos[..., :d], out=o1).addcmul_(x2, sin[..., :d], value=-1.0)
    torch.mul(x2, cos[..., d:], out=o2).addcmul_(x1, sin[..., d:])
    return out


class _RoPE(torch.autograd.Function):
    """x [B, T, H, D] (a projection's view) -> rotated, in a contiguous [B, H, T, D] tensor."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:  # cos, sin [B, T, 1, D]
        B, T, H, D = x.shape
        out = x.new_empty(B, H, T, D)
        _rotate_into(out.transpose(1, 2), x, cos, sin)
        ctx.save_for_backward(cos, sin)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:  # the inverse rotation
        cos, sin = ctx.saved_tensors
        g = grad.transpose(1, 2)  # [B, T, H, D]
        d = g.shape[-1] // 2
        gx = torch.empty_like(g, memory_format=torch.contiguous_format)
        torch.mul(g[..., :d], cos[..., :d], out=gx[..., :d]).addcmul_(g[..., d:], sin[..., d:])
        torch.mul(g[..., d:], cos[..., d:], out=gx[..., d:]).addcmul_(g[..., :d], sin[..., :d], value=-1.0)
        return gx, None, None


def _rotate_half(x: Tensor) -> Tensor:
    d = x.shape[-1] // 2
    return torch.cat((-x[..., d:], x[..., :d]), dim=-1)


def _rope(x: Tensor, cos: Tensor, sin: Tensor, scale: float) -> Tensor:  # [B, T, H, D] -> [B, H, T, D]
    if x.dtype != cos.dtype:  # autocast: HF's formula and its dtype promotion
        x = x.transpose(1, 2)
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        out = x * c + _rotate_half(x) * s
        return out if scale == 1.0 else out * scale
    c, s = cos.unsqueeze(2), sin.unsqueeze(2)
    if scale != 1.0:
        c, s = c * scale, s * scale
    return _RoPE.apply(x, c, s)


# ---------------------------------------------------------------- SwiGLU
class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gate: Tensor, up: Tensor) -> Tensor:
        ctx.save_for_backward(gate, up)
        return F.silu(gate).mul_(up)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, Tensor]:
        gate, up = ctx.saved_tensors
        t = grad * up
        grad_gate = torch.ops.aten.silu_backward.grad_input(t, gate, grad_input=t)  # in place: one temporary
        return grad_gate, F.silu(gate).mul_(grad)


def _mlp_forward(self: nn.Module, x: Tensor) -> Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    h = _SwiGLU.apply(gate, up) if gate.dtype == up.dtype else self.act_fn(gate) * up
    return self.down_proj(h)


# ---------------------------------------------------------------- attention
def _eager(query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None, dropout: float,
           training: bool) -> tuple[Tensor, Tensor]:  # fmt: skip
    """HF's eager attention with the scale already in `query` [B, H, T, D]; key, value [B, Hkv, S, D]."""
    B, H, T, D = query.shape
    Hkv, S = key.shape[1], key.shape[2]
    q = query.reshape(B, Hkv, (H // Hkv) * T, D)  # the query heads of one kv head, as one block (GQA)
    scores = torch.matmul(q, key.transpose(2, 3)).view(B, H, T, S)
    if mask is not None:
        mask = mask[:, :, :, :S]
        scores = scores.add_(mask) if mask.dtype == scores.dtype else scores + mask
    weights = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout and training:
        weights = F.dropout(weights, p=dropout, training=True)
    out = torch.matmul(weights.view(B, Hkv, (H // Hkv) * T, S), value).view(B, H, T, D)
    return out.transpose(1, 2).contiguous(), weights


def _attention_forward(self: nn.Module, hidden_states: Tensor, position_embeddings: tuple[Tensor, Tensor],
                       attention_mask: Tensor | None = None, cache: Any = None, past_key_values: Any = None,
                       **kwargs: Any) -> tuple[Tensor, Tensor | None]:  # fmt: skip
    """The HF attention forward of Llama / Qwen2 / Qwen3 / Mistral with the kernels above."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    cache = cache if cache is not None else past_key_values
    input_shape = hidden_states.shape[:-1]
    shape = (*input_shape, -1, self.head_dim)
    q, k = self.q_proj(hidden_states).view(shape), self.k_proj(hidden_states).view(shape)
    if getattr(self, "q_norm", None) is not None:  # Qwen3: RMSNorm over each head
        q, k = self.q_norm(q), self.k_norm(k)
    v = self.v_proj(hidden_states).view(shape).transpose(1, 2)
    impl = self.config._attn_implementation
    scale = self.scaling if impl == "eager" else 1.0  # eager: the scale rides in the query's rotation
    cos, sin = position_embeddings
    q, k = _rope(q, cos, sin, scale), _rope(k, cos, sin, 1.0)
    if cache is not None:
        k, v = cache.update(k, v, self.layer_idx, kwargs=kwargs)
    dropout = 0.0 if not self.training else self.attention_dropout
    if impl == "eager":
        out, weights = _eager(q, k, v, attention_mask, dropout, self.training)
    else:
        kw = {"sliding_window": self.sliding_window} if getattr(self, "sliding_window", None) is not None else {}
        attend = ALL_ATTENTION_FUNCTIONS[impl]
        out, weights = attend(self, q, k, v, attention_mask, dropout=dropout, scaling=self.scaling, **kw, **kwargs)
    return self.o_proj(out.reshape(*input_shape, -1).contiguous()), weights


# ---------------------------------------------------------------- patching
_FORWARDS = {**dict.fromkeys(_NORMS, _rms_norm_forward), **dict.fromkeys(_MLPS, _mlp_forward),
             **dict.fromkeys(_ATTENTIONS, _attention_forward)}  # fmt: skip


def _hf_class(module: nn.Module) -> str:
    """The HF class name of `module`, also under FSDP2 (which swaps in an `FSDP<name>` subclass)."""
    for cls in type(module).__mro__:
        if cls.__module__.startswith("transformers.models.") and cls.__name__ in _FORWARDS:
            return cls.__name__
    return ""


def supports(model: nn.Module) -> bool:
    """A class whose modules these kernels reproduce exactly (tested), on its default settings."""
    inner = getattr(model, "module", model)
    names = {c.__name__ for c in type(inner).__mro__}
    cfg = getattr(inner, "config", None)
    act = getattr(cfg, "hidden_act", None)
    return (bool(names & set(SUPPORTED)) and act == "silu" and not getattr(cfg, "mlp_bias", False)
            and all(_same_signature(m) for m in inner.modules() if _hf_class(m) in _ATTENTIONS))  # fmt: skip


# The attention forward `_attention_forward` reproduces (transformers 5.x: `past_key_values`, renamed `cache`
# in 5.2x).  4.x passed `past_key_value` and `cache_position`: there the patch would drop the KV cache, so
# such a class is left to HF's own modules.
_ATTENTION_PARAMS = (
    ("self", "hidden_states", "position_embeddings", "attention_mask", "past_key_values", "kwargs"),
    ("self", "hidden_states", "position_embeddings", "attention_mask", "cache", "kwargs"),
)


def _same_signature(module: nn.Module) -> bool:
    cls = next(c for c in type(module).__mro__ if c.__name__ in _ATTENTIONS)
    return tuple(inspect.signature(cls.forward).parameters) in _ATTENTION_PARAMS


def fuse(model: nn.Module) -> int:
    """Patch the RMSNorm, MLP and attention instances of a supported model; the number patched (0: unsupported)."""
    if not supports(model):
        return 0
    n = 0
    for module in model.modules():
        fn = _FORWARDS.get(_hf_class(module))
        if fn is not None and not getattr(module, "_rlvr_fused", False):
            module.forward = types.MethodType(fn, module)
            module._rlvr_fused = True
            n += 1
    return n


def unfuse(model: nn.Module) -> None:
    """Back to the classes' own forwards (tests compare the two on one model)."""
    for module in model.modules():
        if getattr(module, "_rlvr_fused", False):
            del module.forward
            del module._rlvr_fused
