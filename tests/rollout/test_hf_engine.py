"""HFEngine against the reference implementations: model.generate (greedy), a plain forward
(scores), the simple HF-cache backend (same samples), and the unshared-prefill path."""

from __future__ import annotations

import itertools

import pytest
import torch

from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.rollout.base import Engine, SamplingParams
from rlvr.rollout.hf import HFEngine

TEXTS = ["What is 12+7? <think>", "a", "Reverse 'abc'. ", "<answer>"]  # different lengths: left padding


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return build_model("1m", tok, seed=0)


@pytest.fixture(scope="module")
def prompts(tok):
    return [tok(t)["input_ids"] for t in TEXTS]


def engine(model, tok, **kw) -> HFEngine:
    return HFEngine(model, tok, dtype=torch.float32, **kw)


def sample(n=3, **kw) -> SamplingParams:
    return SamplingParams(**{"n": n, "temperature": 1.0, "max_new_tokens": 24, "seed": 7, **kw})


@pytest.mark.parametrize("backend", ["fast", "hf"])
def test_greedy_equals_model_generate_with_left_padding(model, tok, prompts, backend):
    enc = tok.pad({"input_ids": prompts}, return_tensors="pt")
    with torch.no_grad():
        ref = model.generate(
            **enc, do_sample=False, max_new_tokens=20, min_new_tokens=20, pad_token_id=tok.pad_token_id
        )
    ref = ref[:, enc["input_ids"].shape[1] :].tolist()
    eng = engine(model, tok, backend=backend, max_batch_size=3)  # also exercises chunking
    out = eng.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=20, min_new_tokens=20))
    assert isinstance(eng, Engine)
    assert [list(g[0].token_ids) for g in out] == ref
    assert all(g[0].finish_reason == "length" for g in out)


def test_sampler_logprobs_equal_teacher_forced_scores(model, tok, prompts):
    eng = engine(model, tok)
    groups = eng.generate(prompts, sample(min_new_tokens=24))
    flat = [(p, c) for p, g in zip(prompts, groups) for c in g]
    scores = eng.score([p for p, _ in flat], [c.token_ids for _, c in flat])
    for (_, c), s in zip(flat, scores):
        assert len(s.logprobs) == len(c.token_ids) == 24
        assert torch.allclose(torch.tensor(c.sampler_logprobs), torch.tensor(s.logprobs), atol=1e-4)


def test_score_at_temperature_and_top_k(model, tok, prompts):
    """score(temperature=T) equals the sampler's logprobs at T; top_k lists each position's best tokens."""
    eng = engine(model, tok)
    groups = eng.generate(prompts[:2], sample(temperature=0.7, min_new_tokens=6, max_new_tokens=6))
    flat = [(p, c) for p, g in zip(prompts, groups) for c in g]
    scored = eng.score([p for p, _ in flat], [c.token_ids for _, c in flat], temperature=0.7, top_k=3)
    for (p, c), s in zip(flat, scored):
        assert torch.allclose(torch.tensor(c.sampler_logprobs), torch.tensor(s.logprobs), atol=1e-4)
        ids = torch.tensor([list(p) + list(c.token_ids)])
        with torch.no_grad():
            lp = (model(ids).logits[0, len(p) - 1 : -1] / 0.7).log_softmax(-1)
        best = lp.topk(3, dim=-1)
        assert [list(x) for x in s.top_ids] == best.indices.tolist()
        assert torch.allclose(torch.tensor(s.top_logprobs), best.values, atol=1e-4)
        assert all(a >= b for row in s.top_logprobs for a, b in itertools.pairwise(row))  # descending
    assert eng.score([prompts[0]], [[5]])[0].top_ids is None  # no top-k unless asked


def test_score_matches_unpadded_forward(model, tok, prompts):
    comps = [[5, 6, 7], [8], [], [9, 10]]
    scores = engine(model, tok, max_batch_size=2).score(prompts, comps)
    for p, c, s in zip(prompts, comps, scores):
        ids = torch.tensor([list(p) + c])
        with torch.no_grad():
            lp = model(ids).logits[0, len(p) - 1 : -1].log_softmax(-1)
        want = lp[torch.arange(len(c)), torch.tensor(c, dtype=torch.long)].tolist() if c else []
        assert list(s.logprobs) == pytest.approx(want, abs=1e-4)


def test_temperature_logprobs_are_scaled(model, tok, prompts):
    c = engine(model, tok).generate(prompts[:1], sample(n=1, temperature=0.7, top_k=5))[0][0]
    ids = torch.tensor([list(prompts[0]) + list(c.token_ids)])
    with torch.no_grad():
        lp = (model(ids).logits[0, len(prompts[0]) - 1 : -1] / 0.7).log_softmax(-1)
    want = lp[torch.arange(len(c.token_ids)), torch.tensor(c.token_ids)]
    assert torch.allclose(torch.tensor(c.sampler_logprobs), want, atol=1e-4)


def test_seed_reproducibility(model, tok, prompts):
    eng = engine(model, tok)
    a, b = eng.generate(prompts, sample()), eng.generate(prompts, sample())
    c = eng.generate(prompts, sample(seed=8))
    assert a == b
    assert [x.token_ids for g in a for x in g] != [x.token_ids for g in c for x in g]
    assert len({x.token_ids for x in a[0]}) == 3  # the samples of a group differ


def test_fast_backend_matches_simple_backend(model, tok, prompts):
    fast = engine(model, tok, backend="fast").generate(prompts, sample(top_p=0.9))
    simple = engine(model, tok, backend="hf").generate(prompts, sample(top_p=0.9))
    assert [[c.token_ids for c in g] for g in fast] == [[c.token_ids for c in g] for g in simple]
    for gf, gs in zip(fast, simple):
        for cf, cs in zip(gf, gs):
            assert cf.sampler_logprobs == pytest.approx(cs.sampler_logprobs, abs=1e-4)


def test_shared_group_prefill_equals_repeated_prompts(model, tok, prompts):
    # n=4 for one prompt (prefilled once, cache expanded) vs the prompt 4 times with n=1: the rows
    # are laid out identically, so the same generator draws give the same samples.
    eng = engine(model, tok)
    shared = eng.generate(prompts[:1], sample(n=4))[0]
    repeated = [g[0] for g in eng.generate(prompts[:1] * 4, sample(n=1))]
    assert [c.token_ids for c in shared] == [c.token_ids for c in repeated]
    for a, b in zip(shared, repeated):
        assert a.sampler_logprobs == pytest.approx(b.sampler_logprobs, abs=1e-5)


def test_stop_token_kept_and_min_new_tokens(model, tok, prompts):
    eng = engine(model, tok)
    ref = eng.generate(prompts[:1], sample(n=1, max_new_tokens=12, min_new_tokens=12))[0][0].token_ids
    j = next(i for i in range(2, 12) if ref[i] not in ref[:i])  # first new token from position 2
    stop = sample(n=1, max_new_tokens=12, stop_token_ids=(ref[j],))
    c = eng.generate(prompts[:1], stop)[0][0]
    assert c.token_ids == ref[: j + 1] and c.finish_reason == "stop"
    assert c.text == tok.decode(list(ref[: j + 1]))
    # Banning a token that did not win the exponential race leaves the earlier draws unchanged.
    late = eng.generate(prompts[:1], SamplingParams(**{**stop.as_dict(), "min_new_tokens": 12}))[0][0]
    assert len(late.token_ids) == 12 and late.token_ids[:j] == ref[:j] and ref[j] not in late.token_ids


def test_stop_string_cuts_text(model, tok, prompts):
    eng = engine(model, tok, check_every=2)
    ref = eng.generate(prompts[:1], sample(n=1, max_new_tokens=16, min_new_tokens=16))[0][0]
    target = ref.text[3:6]  # a 3-character string completed by token 6 at the latest
    first = ref.text.find(target) + len(target)
    c = eng.generate(prompts[:1], sample(n=1, max_new_tokens=16, stop_strings=(target,)))[0][0]
    assert c.finish_reason == "stop" and c.text == ref.text[:first]
    assert c.token_ids == ref.token_ids[:first] and len(c.sampler_logprobs) == first


def test_eos_stops_and_is_dropped_from_text(model, tok, prompts):
    eos = tok.eos_token_id
    eng = engine(model, tok)  # a copy of the weights: the trainer's model is untouched
    eng.model.lm_head.weight.data[eos] += 100.0  # eos always wins (lm_head is tied to the embeddings)
    c = eng.generate(prompts[:1], SamplingParams(temperature=0.0, max_new_tokens=5, min_new_tokens=2))[0][0]
    assert len(c.token_ids) == 3 and c.token_ids[-1] == eos and c.finish_reason == "stop"
    assert tok.eos_token not in c.text and len(c.text) == 2


def _lps(scores):
    return torch.tensor([s.logprobs for s in scores])


def test_update_weights_versions_and_fingerprint(model, tok, prompts):
    eng = engine(model, tok)
    fp, ptr = eng.fingerprint(), eng.model.model.embed_tokens.weight.data_ptr()
    other = build_model("1m", tok, seed=1)
    assert eng.version == 0 and eng.update_weights(other.state_dict(), version=7) == 7 and eng.version == 7
    assert eng.fingerprint() != fp and eng.model.model.embed_tokens.weight.data_ptr() == ptr
    ref = engine(other, tok).score(prompts, [[5, 6]] * 4)
    assert torch.allclose(_lps(eng.score(prompts, [[5, 6]] * 4)), _lps(ref), atol=1e-5)
    with pytest.raises(KeyError, match="unknown parameter names"):
        eng.update_weights({"nope.weight": torch.zeros(1)}, version=8)


def test_shared_weights_follow_the_trainer(tok, prompts):
    policy = build_model("1m", tok, seed=2)
    eng = HFEngine(policy, tok, share_weights=True, dtype=None)
    fp, before = eng.fingerprint(), eng.score(prompts[:1], [[5, 6]])
    with torch.no_grad():
        policy.model.norm.weight.mul_(1.5)
    assert eng.update_weights({}, version=1) == 1  # only the version moves when sharing
    assert eng.fingerprint() != fp and eng.score(prompts[:1], [[5, 6]]) != before


def test_bf16_engine_is_close_to_fp32(model, tok, prompts):
    comps = [[5, 6, 7, 8]] * 4
    lo = HFEngine(model, tok, dtype=torch.bfloat16).score(prompts, comps)
    hi = engine(model, tok).score(prompts, comps)
    assert torch.allclose(_lps(lo), _lps(hi), atol=0.1)
    out = HFEngine(model, tok).generate(prompts, sample(n=2, max_new_tokens=8, min_new_tokens=8))
    assert all(len(c.token_ids) == len(c.sampler_logprobs) == 8 for g in out for c in g)


def test_empty_prompt_is_refused(model, tok):
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        engine(model, tok).generate([[]], sample())
