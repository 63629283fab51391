"""The fused fast decode path (`rollout.fused`) against the reference HF-cache path, per architecture.

Llama with GQA, Qwen2 (q/k/v biases, made non-zero so a dropped bias would show), Qwen3 (per-head
q/k RMSNorm): the same tokens and sampler logprobs within fp32 tolerance, greedy and sampled with a
fixed seed, and scores equal to the model's own forward.  An architecture the fast path does not
know (GPT-2) falls back to the reference path and still generates."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Qwen2ForCausalLM

from rlvr.models.tiny import build_tokenizer
from rlvr.rollout import fused as fused_mod
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.fused import FusedLlama, Linear
from rlvr.rollout.hf import HFEngine
from tests.rollout.archs import build_arch

TEXTS = ["What is 12+7? <think>", "a", "Reverse 'abc'. "]  # different lengths: left padding
SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def prompts(tok):
    return [tok(t)["input_ids"] for t in TEXTS]


def _model(kind: str, tok) -> torch.nn.Module:
    return build_arch(kind, tok, **SHAPE)


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3"])
def arch_model(request, tok):
    return _model(request.param, tok)


def _pair(model, tok):
    fast = HFEngine(model, tok, dtype=torch.float32, backend="fast")
    ref = HFEngine(model, tok, dtype=torch.float32, backend="hf")
    return fast, ref


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(n=1, temperature=0.0, max_new_tokens=16, min_new_tokens=16),
        SamplingParams(n=3, temperature=1.0, top_p=0.95, max_new_tokens=16, min_new_tokens=4, seed=11),
    ],
    ids=["greedy", "sampled"],
)
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "packed"])
def test_fast_path_equals_reference_path(arch_model, tok, prompts, params, packed, monkeypatch):
    if packed:  # the test models are below the size where oneDNN prepacking is used: force it
        monkeypatch.setattr(fused_mod, "PACK_MIN_NUMEL", 0)
    fast, ref = _pair(arch_model, tok)
    packs = [lin.packed is not None for lin in (fast._fused_weights().layers[0].qkv, fast._fused_weights().layers[0].down)]
    assert packs == [packed and fused_mod._pack_ok(torch.zeros(1))] * 2
    assert fast.fast and not ref.fast
    a, b = fast.generate(prompts, params), ref.generate(prompts, params)
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    for ga, gb in zip(a, b):
        for ca, cb in zip(ga, gb):
            assert ca.sampler_logprobs == pytest.approx(cb.sampler_logprobs, abs=1e-4)


def test_no_unwritten_cache_slot_is_read(arch_model, tok, prompts, monkeypatch):
    # the fast path's KV caches are allocated uninitialised: filled with NaN, any slot read before it is
    # written would poison every logprob after it
    from rlvr.rollout import backends

    real = backends.FastLlamaBackend._alloc
    monkeypatch.setattr(backends.FastLlamaBackend, "_alloc", lambda self, *a: tuple(t.fill_(float("nan")) for t in real(self, *a)))
    fast, ref = _pair(arch_model, tok)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, min_new_tokens=12, seed=5)
    a, b = fast.generate(prompts, params), ref.generate(prompts, params)
    assert [[c.token_ids for c in g] for g in a] == [[c.token_ids for c in g] for g in b]
    assert all(c.sampler_logprobs == pytest.approx(d.sampler_logprobs, abs=1e-4) for ga, gb in zip(a, b) for c, d in zip(ga, gb))


def test_fast_scores_equal_the_models_forward(arch_model, tok, prompts):
    fast, _ = _pair(arch_model, tok)
    comp = [5, 9, 7, 3]
    got = fast.score(prompts, [comp] * len(prompts))
    for p, s in zip(prompts, got):
        ids = torch.tensor([list(p) + comp])
        with torch.no_grad():
            logp = torch.log_softmax(arch_model(input_ids=ids).logits[0].float(), dim=-1)
        want = logp[len(p) - 1 : -1].gather(-1, torch.tensor(comp)[:, None]).squeeze(-1)
        assert torch.allclose(torch.tensor(s.logprobs), want, atol=1e-4)


def test_fused_weights_follow_update_weights(tok, prompts):
    model = _model("qwen2", tok)
    other = Qwen2ForCausalLM(model.config)
    with torch.no_grad():
        for p in other.parameters():
            p.normal_(0, 0.1)
    eng = HFEngine(model, tok, dtype=torch.float32)
    before = eng.score(prompts, [[5, 6]] * 3)
    eng.update_weights(other.state_dict(), version=1)
    after = eng.score(prompts, [[5, 6]] * 3)
    want = HFEngine(other, tok, dtype=torch.float32, backend="hf").score(prompts, [[5, 6]] * 3)
    assert after != before
    for s, w in zip(after, want):
        assert s.logprobs == pytest.approx(w.logprobs, abs=1e-4)


def test_fused_layout_concatenates_projections(tok):
    model = _model("qwen2", tok)
    fused = FusedLlama.from_model(model)
    a = model.model.layers[0].self_attn
    x = torch.randn(5, SHAPE["hidden_size"])
    want = torch.cat([a.q_proj(x), a.k_proj(x), a.v_proj(x)], dim=-1)
    assert torch.allclose(fused.layers[0].qkv(x), want, atol=1e-5)
    plain = Linear(a.q_proj.weight.detach(), a.q_proj.bias.detach())
    assert plain.packed is None and torch.allclose(plain(x), a.q_proj(x), atol=1e-5)
    w, b, x = torch.randn(1024, 512) * 0.05, torch.randn(1024), torch.randn(7, 3, 512)
    big = Linear(w, b)  # big enough to be prepacked where oneDNN is available
    assert (big.packed is not None) == fused_mod._pack_ok(w)
    assert torch.allclose(big(x), torch.nn.functional.linear(x, w, b), atol=1e-4)


def test_unknown_architecture_falls_back_to_the_reference_path(tok, prompts):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=1, n_head=2, n_positions=64,
                     pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)  # fmt: skip
    eng = HFEngine(GPT2LMHeadModel(cfg).eval(), tok, dtype=torch.float32)
    assert not eng.fast
    out = eng.generate(prompts, SamplingParams(n=2, max_new_tokens=6, min_new_tokens=6, seed=1))
    assert all(len(c.token_ids) == 6 for g in out for c in g)
    with pytest.raises(ValueError, match="does not support model_type 'gpt2'"):
        HFEngine(GPT2LMHeadModel(cfg), tok, backend="fast")


@pytest.mark.parametrize("n_kv", [4, 2, 1], ids=["mha", "gqa", "mqa"])
def test_shared_prefix_attention_equals_attention_over_one_cache(n_kv):
    """Decode attention over [the group's prompt keys stored once, the row's own keys] is attention
    over one per-row cache holding the prompt copied n times, left padding masked (SDPA's result)."""
    from rlvr.rollout.fused import CacheAttention, SharedPrefixAttention

    torch.manual_seed(0)
    P, n, nq, D, Lp, T, slot = 3, 4, 4, 8, 5, 6, 3
    B = P * n
    kp, vp = torch.randn(P, n_kv, Lp, D), torch.randn(P, n_kv, Lp, D)
    kg, vg = torch.randn(B, n_kv, T, D), torch.randn(B, n_kv, T, D)
    mask = torch.ones(P, Lp, dtype=torch.bool)
    mask[1, :2] = False  # prompt 1 is left-padded by two
    bias = torch.zeros(P, 1, 1, Lp).masked_fill(~mask[:, None, None, :], float("-inf"))
    q, k, v = torch.randn(B, 1, nq, D), torch.randn(B, 1, n_kv, D), torch.randn(B, 1, n_kv, D)
    got = SharedPrefixAttention([(kp, vp)], bias, [(kg.clone(), vg.clone())], slot, n, 0.3)(0, q, k, v)

    full_k = torch.cat([kp.repeat_interleave(n, 0), kg], dim=2)  # the same keys, the prompt per row
    full_v = torch.cat([vp.repeat_interleave(n, 0), vg], dim=2)
    keys = torch.cat([mask.repeat_interleave(n, 0), torch.ones(B, T, dtype=torch.bool)], dim=1)
    keys[:, Lp + slot + 1 :] = False  # slots after this token are not written yet
    want = CacheAttention([(full_k, full_v)], keys[:, None, None, : Lp + slot + 1], Lp + slot, 0.3)(0, q, k, v)
    assert got.shape == (B, 1, nq * D)
    assert torch.allclose(got, want, atol=1e-6)


def test_a_model_with_peft_adapters_takes_the_reference_path(tok, prompts):
    """The fused copy reads each projection's `.weight` (the base weight under peft): an engine over a
    LoRA-injected model must decode through the model's own forward, adapters included."""
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(_model("llama", tok), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)  # B starts at 0: make the adapters matter
    inner = model.get_base_model()
    engine = HFEngine(inner, tok, dtype=torch.float32)
    assert not engine.fast
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=6, min_new_tokens=6)
    got = engine.generate(prompts[:1], params)[0][0]
    ids = torch.tensor([list(prompts[0]) + list(got.token_ids)])
    with torch.no_grad():
        logp = torch.log_softmax(inner(input_ids=ids).logits[0].float(), dim=-1)
    want = logp[len(prompts[0]) - 1 : -1].gather(-1, torch.tensor(got.token_ids)[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor(got.sampler_logprobs), want, atol=1e-4)
