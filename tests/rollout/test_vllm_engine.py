"""`VLLMEngine` against `HFEngine` on the tiny model in fp32: the same logprobs for what vLLM samples and
for what it scores (top-k included), rlvr's logprob convention under top-p / top-k, a weight update that
moves both engines alike (prefix cache reset), the checked sync catching an update that did not happen,
and construction that leaves the process's RNG and thread setting alone.  Needs vLLM (CPU build here)."""

from __future__ import annotations

import random

import pytest
import torch

from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.rollout.base import SamplingParams, WeightSyncError
from rlvr.trainer.batching import Sample
from rlvr.trainer.sync import check_logprobs

pytestmark = pytest.mark.vllm
TOL = 1e-4  # nats per token; fp32 kernels agree to ~1e-6


@pytest.fixture(scope="module")
def engines():
    from rlvr.rollout.hf import HFEngine
    from rlvr.rollout.vllm import VLLMEngine

    tok = build_tokenizer()
    model = build_model("1m", tok, 0).float().eval()
    torch.manual_seed(1234)
    rng, set_threads, threads = torch.get_rng_state(), torch.set_num_threads, torch.get_num_threads()
    py = random.getstate()
    vl = VLLMEngine.from_model(model, tok, seed=99)
    kept = {"rng": torch.equal(rng, torch.get_rng_state()) and py == random.getstate(),
            "threads": torch.set_num_threads is set_threads and torch.get_num_threads() == threads}
    return model, tok, HFEngine(model, tok, dtype=torch.float32), vl, kept


def _prompts(tok):
    return [tok("12+34=")["input_ids"], tok("sort 9 3 5:")["input_ids"]]


def test_construction_keeps_the_process_rng_and_threads(engines):
    assert engines[4] == {"rng": True, "threads": True}


def test_sampler_logprobs_match_hf_scores_and_seeds_reproduce(engines):
    _, tok, hf, vl, _ = engines
    params = SamplingParams(n=4, temperature=0.8, max_new_tokens=24, seed=7, stop_token_ids=(tok.eos_token_id,))
    out = vl.generate(_prompts(tok), params)
    assert [len(g) for g in out] == [4, 4]
    assert len({c.token_ids for c in out[0]}) > 1  # the n samples differ
    assert vl.generate(_prompts(tok), params) == out  # same seed, same samples
    assert vl.generate(_prompts(tok), SamplingParams(n=4, temperature=0.8, max_new_tokens=24, seed=8)) != out
    for p, group in zip(_prompts(tok), out):
        ref = hf.score([p] * 4, [c.token_ids for c in group], temperature=0.8)
        for c, r in zip(group, ref):
            assert len(c.sampler_logprobs) == len(c.token_ids) > 0
            assert max(abs(a - b) for a, b in zip(c.sampler_logprobs, r.logprobs)) < TOL
            assert c.finish_reason == ("stop" if c.token_ids[-1] == tok.eos_token_id else "length")


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (1.0, 5), (0.7, 3)])
def test_score_matches_hf_with_top_k(engines, temperature, top_k):
    _, tok, hf, vl, _ = engines
    prompts = _prompts(tok)
    completions = [tok("46<eos>", add_special_tokens=False)["input_ids"], tok(" 3 5 9", add_special_tokens=False)["input_ids"]]
    a = vl.score([*prompts, prompts[0]], [*completions, []], temperature=temperature, top_k=top_k)
    b = hf.score(prompts, completions, temperature=temperature, top_k=top_k)
    assert a[2].logprobs == ()
    for x, y in zip(a, b):
        assert max(abs(u - v) for u, v in zip(x.logprobs, y.logprobs)) < TOL
        if top_k:
            assert x.top_ids == y.top_ids
            assert max(abs(u - v) for ux, vy in zip(x.top_logprobs, y.top_logprobs) for u, v in zip(ux, vy)) < TOL
        else:
            assert x.top_ids is None


def test_truncated_sampling_reports_untruncated_logprobs(engines):
    """rlvr's convention (`rlvr.rollout.sampling`): logprobs before top-p / top-k, as the trainer computes."""
    _, tok, hf, vl, _ = engines
    out = vl.generate(_prompts(tok)[:1], SamplingParams(n=3, temperature=0.9, top_p=0.8, top_k=20, max_new_tokens=16,
                                                        seed=3))  # fmt: skip
    ref = hf.score(_prompts(tok)[:1] * 3, [c.token_ids for c in out[0]], temperature=0.9)
    for c, r in zip(out[0], ref):
        assert max(abs(a - b) for a, b in zip(c.sampler_logprobs, r.logprobs)) < TOL


def test_a_weight_update_moves_both_engines_alike_and_the_check_catches_a_missed_one(engines):
    model, tok, hf, vl, _ = engines
    prompt = _prompts(tok)[0]
    comp = vl.generate([prompt], SamplingParams(n=1, temperature=1.0, max_new_tokens=20, seed=5))[0][0]
    before = torch.tensor(vl.score([prompt], [comp.token_ids])[0].logprobs)  # the prompt's KV is now cached
    original = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    perturbed = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in original.items()}
    sample = Sample(tuple(prompt), comp.token_ids)
    try:
        model.load_state_dict(perturbed)
        with pytest.raises(WeightSyncError, match="differ from the trainer's"):
            check_logprobs(vl, model, sample, temperature=1.0, autocast=False, bf16=False, pad_id=tok.pad_token_id)
        fp = vl.fingerprint()
        assert vl.update_weights(perturbed, version=1) == 1 and hf.update_weights(perturbed, version=1) == 1
        assert vl.fingerprint() != fp
        after_vl = torch.tensor(vl.score([prompt], [comp.token_ids])[0].logprobs)
        after_hf = torch.tensor(hf.score([prompt], [comp.token_ids])[0].logprobs)
        assert (after_vl - before).abs().max() > 1e-2  # the update changed the logprobs...
        assert ((after_vl - before) - (after_hf - before)).abs().max() < TOL  # ...by the same amount in both
        metrics = check_logprobs(vl, model, sample, temperature=1.0, autocast=False, bf16=False, pad_id=tok.pad_token_id)
        assert metrics["sync/max_abs_logp_diff"] < TOL
    finally:
        model.load_state_dict(original)
        vl.update_weights(original, version=2)
        hf.update_weights(original, version=2)
