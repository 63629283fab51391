"""rlvr.models.kernels: the patched forward and every gradient equal HF's own (fp32), on every trainer path.

Tolerance: each compared tensor within 1e-5 of its largest magnitude (+1e-9), fp32 throughout.  The tiny
configs use rms_norm_eps = 0.05 so that a wrong epsilon moves outputs far past that tolerance.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from rlvr.config import ConfigError, ModelConfig
from rlvr.models import kernels
from rlvr.trainer import build
from rlvr.trainer.batching import Sample, collate
from rlvr.trainer.forward import completion_logprobs
from rlvr.trainer.rl_packing import packed_micro_batches

V, PAD = 97, 0
BASE = dict(vocab_size=V, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            rms_norm_eps=0.05, max_position_embeddings=128, tie_word_embeddings=False, initializer_range=0.1)  # fmt: skip
MODELS = {
    "llama-mha": (LlamaForCausalLM, LlamaConfig(**BASE, num_key_value_heads=4)),
    "llama-gqa": (LlamaForCausalLM, LlamaConfig(**BASE, num_key_value_heads=2)),
    "qwen2-bias": (Qwen2ForCausalLM, Qwen2Config(**BASE, num_key_value_heads=2)),
    "qwen3-qknorm": (Qwen3ForCausalLM, Qwen3Config(**BASE, num_key_value_heads=2, head_dim=16)),
    "mistral": (MistralForCausalLM, MistralConfig(**BASE, num_key_value_heads=2)),
}


def _model(name: str, attn: str = "eager") -> torch.nn.Module:
    cls, cfg = MODELS[name]
    torch.manual_seed(0)
    model = cls(cfg).float().train()
    with torch.no_grad():  # norms away from 1 and biases away from 0, so a dropped weight shows
        for n, p in model.named_parameters():
            if n.endswith("norm.weight") or "bias" in n:
                p.add_(0.3 * torch.randn_like(p))
    model.set_attn_implementation(attn)
    return model


def _samples(n_groups: int = 2, group: int = 3, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n_groups):
        prompt = tuple(rng.randrange(1, V) for _ in range(rng.randint(2, 6)))  # unequal: left padding
        for _ in range(group):
            comp = tuple(rng.randrange(1, V) for _ in range(rng.randint(1, 7)))
            out.append(Sample(prompt, comp, index=len(out)))
    return out


def _run(model: torch.nn.Module, batch, **kw) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    logprobs, entropy = completion_logprobs(model, batch, autocast=False, entropy_grad=True, **kw)
    m = batch.loss_mask.float()
    ((logprobs * m).sum() + 0.1 * (entropy * m).sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return (logprobs * m).detach(), grads


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    err, scale = (a - b).abs().max().item(), b.abs().max().item()
    assert err <= 1e-5 * scale + 1e-9, f"{what}: max |diff| {err:.3g} vs max |ref| {scale:.3g}"


def _compare(model: torch.nn.Module, batch, **kw) -> None:
    ref, ref_grads = _run(model, batch, **kw)
    assert kernels.fuse(model) > 0
    try:
        out, grads = _run(model, batch, **kw)
    finally:
        kernels.unfuse(model)
    _close(out, ref, "logprobs")
    assert grads.keys() == ref_grads.keys() and len(grads) > 0
    for n in ref_grads:
        _close(grads[n], ref_grads[n], f"grad {n}")


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("share_prefix", [False, True])
def test_patched_forward_and_grads_equal_hf(name: str, share_prefix: bool) -> None:
    """Left-padded prompts with position ids, plain and shared-prefix (KV cache) paths."""
    model = _model(name)
    batch = collate(_samples(), PAD)
    assert batch.shares_prefixes
    _compare(model, batch, share_prefix=share_prefix)


@pytest.mark.parametrize("name", ["llama-gqa", "qwen3-qknorm"])
def test_packed_rows_4d_mask(name: str) -> None:
    model = _model(name)
    batches = packed_micro_batches(_samples(3, 2, seed=1), 4, PAD, row_len=24)
    assert batches[0].packed is not None
    _compare(model, batches[0])


@pytest.mark.parametrize("name", ["llama-gqa", "qwen3-qknorm"])
def test_under_activation_checkpointing(name: str) -> None:
    model = _model(name)
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable({"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    _compare(model, collate(_samples(), PAD))


def test_sdpa_attention_keeps_hf_kernel() -> None:
    """Under SDPA only the norms, RoPE and MLP change; the attention kernel is HF's."""
    _compare(_model("llama-gqa", attn="sdpa"), collate(_samples(), PAD), share_prefix=False)


def test_with_lora_adapters() -> None:
    pytest.importorskip("peft")
    from rlvr.config.lora import LoRAConfig
    from rlvr.models.lora import apply_lora

    model = _model("qwen2-bias")
    apply_lora(model, LoRAConfig(r=4))
    with torch.no_grad():  # lora_B starts at 0: make the adapters change the output
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    _compare(model, collate(_samples(), PAD))


def test_rms_norm_hand_numbers_and_eps() -> None:
    """x = [3, 4], w = [1, 2], eps 0.5: rms = sqrt(12.5 + 0.5); out = w * x / rms."""
    norm = _model("llama-mha").model.norm
    norm.weight.data = torch.tensor([1.0, 2.0])
    norm.variance_epsilon = 0.5
    x = torch.tensor([[3.0, 4.0]])
    out = kernels._rms_norm_forward(norm, x)
    r = math.sqrt(13.0)
    assert torch.allclose(out, torch.tensor([[3 / r, 8 / r]]), atol=1e-6)


def test_rope_hand_numbers_and_inverse() -> None:
    """D = 2: x = [1, 0] rotated by theta is [cos theta, sin theta]; the backward is the inverse rotation."""
    theta = 0.7
    cos = torch.full((1, 1, 1, 2), math.cos(theta))
    sin = torch.full((1, 1, 1, 2), math.sin(theta))
    x = torch.tensor([[[[1.0, 0.0]]]], requires_grad=True)  # [B, T, H, D]
    out = kernels._RoPE.apply(x, cos, sin)
    assert torch.allclose(out, torch.tensor([[[[math.cos(theta), math.sin(theta)]]]]), atol=1e-6)
    out.backward(out.detach())  # the inverse rotation of the rotated vector is the vector itself
    assert torch.allclose(x.grad, x.detach(), atol=1e-6)


def test_unsupported_classes_untouched() -> None:
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=1, n_head=2))
    assert kernels.fuse(gpt2) == 0 and not any(hasattr(m, "_rlvr_fused") for m in gpt2.modules())
    gelu = LlamaForCausalLM(LlamaConfig(**{**BASE, "hidden_act": "gelu"}))
    assert kernels.fuse(gelu) == 0
    with pytest.raises(ConfigError, match=r"model\.fused_kernels"):
        build.fuse_kernels(gpt2, True)


def test_an_attention_forward_of_another_signature_is_left_to_hf() -> None:
    # transformers 4.x passed `past_key_value` and `cache_position`: the patch would drop the KV cache there
    from transformers.models.llama import modeling_llama

    class LlamaAttention(modeling_llama.LlamaAttention):  # the name the patch looks for
        def forward(self, hidden_states, position_embeddings, attention_mask=None, past_key_value=None,
                    cache_position=None, **kwargs):  # fmt: skip
            return super().forward(hidden_states, position_embeddings, attention_mask, **kwargs)

    model = _model("llama-gqa")
    assert kernels.supports(model)
    for layer in model.model.layers:
        layer.self_attn.__class__ = LlamaAttention
    assert not kernels.supports(model) and kernels.fuse(model) == 0
    with pytest.raises(ConfigError, match=r"model\.fused_kernels"):
        build.fuse_kernels(model, True)


def test_switch_and_state_dict_unchanged() -> None:
    assert ModelConfig().fused_kernels == "auto"
    model = _model("llama-gqa")
    keys = list(model.state_dict())
    assert build.fuse_kernels(model, False) == 0
    n = build.fuse_kernels(model, "auto")
    assert n == 2 * (2 + 1 + 1) + 1  # per layer two norms, the MLP and attention; the final norm
    assert list(model.state_dict()) == keys
    assert build.fuse_kernels(model, True) == 0  # already patched: idempotent


@pytest.mark.parametrize("dtypes", [(torch.bfloat16, torch.float32), (torch.bfloat16, torch.bfloat16)])
def test_rms_norm_mixed_dtypes_as_hf(dtypes: tuple[torch.dtype, torch.dtype]) -> None:
    """bf16 input with an fp32 weight (Qwen3's q_norm under autocast) or a bf16 weight: HF's dtypes, bf16-close."""
    x_dtype, w_dtype = dtypes
    norm = _model("qwen3-qknorm").model.layers[0].self_attn.q_norm.to(w_dtype)
    x = torch.randn(3, 5, 16).to(x_dtype).requires_grad_()
    ref = norm(x)
    (ref.float() * torch.arange(16.0)).sum().backward()
    ref_grads = x.grad.clone(), norm.weight.grad.clone()
    x.grad, norm.weight.grad = None, None
    out = kernels._rms_norm_forward(norm, x)
    (out.float() * torch.arange(16.0)).sum().backward()
    assert out.dtype == ref.dtype
    for a, b in [(out, ref), (x.grad, ref_grads[0]), (norm.weight.grad, ref_grads[1])]:
        assert a.dtype == b.dtype
        assert (a.float() - b.float()).abs().max() <= 2e-2 * b.float().abs().max()


def test_bf16_autocast_keeps_hf_dtypes() -> None:
    model = _model("qwen3-qknorm")
    batch = collate(_samples(), PAD)
    ref = completion_logprobs(model, batch, autocast=True)[0]
    kernels.fuse(model)
    out = completion_logprobs(model, batch, autocast=True)[0]
    m = batch.loss_mask
    assert out.dtype == ref.dtype
    assert (out - ref)[m].abs().max() <= 2e-2 * ref[m].abs().max()
