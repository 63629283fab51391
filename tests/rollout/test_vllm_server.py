"""vLLM's OpenAI-compatible server as the engine (a subprocess, weights through a shared directory): the
same fp32 logprobs as HF for what it samples and scores, a weight update that moves both alike, and a
one-step-off GRPO run that overlaps sampling with training and learns.  Needs vLLM; slow (the server
takes ~30-90 s to start on 2 cores)."""

from __future__ import annotations

import json

import pytest
import torch

from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.rollout.base import SamplingParams
from tests.trainer.fakes import DigitRewardTask, rl_config

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
TOL = 1e-4


@pytest.fixture(scope="module")
def server():
    from rlvr.rollout.vllm_server import VLLMServerEngine

    tok = build_tokenizer()
    model = build_model("1m", tok, 0).float().eval()
    engine = VLLMServerEngine.from_model(model, tok, seed=3)
    yield model, tok, engine
    engine.close()
    assert engine.proc.poll() is not None


def test_server_parity_and_weight_update(server):
    from rlvr.rollout.hf import HFEngine

    model, tok, vl = server
    hf = HFEngine(model, tok, dtype=torch.float32)
    prompts = [tok("12+34=")["input_ids"], tok("sort 9 3 5:")["input_ids"]]
    params = SamplingParams(n=3, temperature=0.8, top_p=0.9, max_new_tokens=16, seed=11)
    out = vl.generate(prompts, params)
    assert vl.generate(prompts, params) == out and [len(g) for g in out] == [3, 3]
    for p, group in zip(prompts, out):
        ref = hf.score([p] * 3, [c.token_ids for c in group], temperature=0.8)
        for c, r in zip(group, ref):
            assert max(abs(a - b) for a, b in zip(c.sampler_logprobs, r.logprobs)) < TOL
    comps = [c.token_ids for c in out[0][:2]]
    a = vl.score([prompts[0]] * 2, comps, top_k=4)
    b = hf.score([prompts[0]] * 2, comps, top_k=4)
    assert all(x.top_ids == y.top_ids for x, y in zip(a, b))
    assert max(abs(u - v) for x, y in zip(a, b) for u, v in zip(x.logprobs, y.logprobs)) < TOL
    g = torch.Generator().manual_seed(0)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    perturbed = {k: v + 0.02 * torch.randn(v.shape, generator=g) for k, v in original.items()}
    assert vl.update_weights(perturbed, version=1) == 1 and hf.update_weights(perturbed, version=1) == 1
    moved_vl = torch.tensor(vl.score([prompts[0]], comps[:1])[0].logprobs) - torch.tensor(a[0].logprobs)
    moved_hf = torch.tensor(hf.score([prompts[0]], comps[:1])[0].logprobs) - torch.tensor(b[0].logprobs)
    assert moved_vl.abs().max() > 1e-2 and (moved_vl - moved_hf).abs().max() < TOL
    vl.update_weights(original, version=2)


def test_one_step_off_grpo_on_the_server_overlaps_and_learns(server, tmp_path):
    from rlvr.trainer import train_rl

    _, tok, vl = server
    cfg = rl_config(tmp_path, rollout={"engine": {"type": "vllm", "mode": "server"}, "group_size": 8,
                                       "prompts_per_step": 4, "max_new_tokens": 16, "max_staleness": 1},
                    optim={"lr": 3e-3, "micro_batch_size": 32}, run={"steps": 14, "samples_every": 0})  # fmt: skip
    result = train_rl(cfg, model=build_model("1m", tok, 0), tokenizer=tok, task=DigitRewardTask(), engine=vl)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    rewards = [r["reward/total"] for r in rows]
    assert result.status == "completed" and sum(rewards[-4:]) / 4 > sum(rewards[:4]) / 4 + 0.1, rewards
    assert [r["staleness/steps"] for r in rows] == [0] + [1] * 13
    assert [r["staleness/policy_version"] for r in rows] == [0, 0, *range(1, 13)]
    assert max(r["sync/max_abs_logp_diff"] for r in rows) < TOL
    assert json.loads((tmp_path / "config.json").read_text())["algorithm"]["correction"]["type"] == "tis"
