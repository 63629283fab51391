"""Unit tests of the benchmark's arithmetic: FLOP counts (hand-derived), pooling, prompts, reward."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from _common import Spec, make_prompts, trivial_reward
from grpo_bench import summarise_side
from roofline import Shape, decode_flops, decode_step_bytes, forward_flops, generate_bound_s, grpo_step_flops

# hidden 4, 2 layers, 2 heads with 1 KV head (k/v width 4*1/2 = 2), intermediate 8, vocab 10
TOY = Shape(hidden=4, layers=2, heads=2, kv_heads=1, intermediate=8, vocab=10)


def test_matmul_params_counts_qkvo_mlp_and_lm_head() -> None:
    # per layer: q,o 2*4*4 = 32; k,v 2*4*2 = 16; gate/up/down 3*4*8 = 96 -> 144; 2 layers 288; lm_head 4*10 = 40
    assert TOY.matmul_params == 328


def test_33m_preset_has_33_6m_matmul_params() -> None:
    from rlvr.models.tiny import build_tokenizer, model_config

    tok = build_tokenizer()
    shape = Shape.from_config(model_config("33m", tok))
    # 8 * (4*512^2 + 3*512*2048) = 33,554,432 plus the lm_head 512 * vocab
    assert shape.matmul_params == 33_554_432 + 512 * len(tok)


def test_forward_flops_dense_plus_causal_attention() -> None:
    # dense 2*328*3 tokens*2 rows = 3936; attention 2 * 2 layers * 3^2 * 4 * 2 rows = 288
    assert forward_flops(TOY, seq_len=3, batch=2) == 3936 + 288


def test_decode_flops_grow_with_context() -> None:
    # 2 new tokens after a 3-token prompt: contexts 3 and 4 (sum 7); per row 2*328*2 + 4*2*4*7 = 1312 + 224
    assert decode_flops(TOY, prompt_len=3, new_tokens=2, batch=2) == 2 * 1536


def test_grpo_step_flops_by_phase() -> None:
    f = grpo_step_flops(TOY, prompt_len=3, prompts=1, group=2, new_tokens=2)
    # generate: one prefill of the prompt (2*328*3 + 2*2*9*4 = 2112) + decode of 2 rows (3072)
    assert f["generate"] == 2112 + 3072
    # reference: 2 rows of 5 tokens: 2*328*5*2 + 2*2*25*4*2 = 6560 + 800
    assert f["reference"] == 7360
    assert f["train"] == 3 * 7360  # forward + backward = 3 forwards
    assert f["step"] == 5184 + 7360 + 22080


def test_decode_step_bytes_read_weights_and_the_kv_cache_once() -> None:
    # k+v width 2*4*1/2 = 4 per token per layer; step 0 attends to the prompt (3 tokens, stored once for
    # the group) + 1 own token per row (2 rows): 5 cached tokens -> 4 bytes * (328 + 2 layers * 4 * 5)
    assert decode_step_bytes(TOY, prompt_len=3, prompts=1, group=2, step=0) == 4 * (328 + 40)
    assert decode_step_bytes(TOY, prompt_len=3, prompts=1, group=2, step=1) == 4 * (328 + 56)


def test_generate_bound_takes_the_larger_ceiling_per_step() -> None:
    kw = dict(prompt_len=3, prompts=1, group=2, new_tokens=2, peak=1e3)
    # at 1 kB/s the FLOPs bind (steps: 1504 FLOPs vs 1472 bytes, 1568 vs 1536): the compute bound 5184 FLOPs
    assert generate_bound_s(TOY, bandwidth=1e3, **kw) == pytest.approx(5.184)
    # at 0.5 kB/s the bytes bind each decode step: prefill 2.112 s + 2.944 s + 3.072 s
    assert generate_bound_s(TOY, bandwidth=5e2, **kw) == pytest.approx(2.112 + 2.944 + 3.072)


def test_summarise_side_pools_rounds_and_keeps_max_rss() -> None:
    run = {"fixed_length_ok": True, "completion_len": {"min": 4, "max": 4}}
    results = [
        {**run, "steps": [{"step": 1.0, "train": 0.5}, {"step": 3.0, "train": 0.7}], "peak_rss_mb": 100.0},
        {**run, "steps": [{"step": 2.0, "train": 0.6}], "peak_rss_mb": 120.0},
    ]
    s = summarise_side(results)
    assert s["median"] == {"train": 0.6, "step": 2.0}  # medians of [0.5, 0.7, 0.6] and [1, 3, 2]
    assert s["peak_rss_mb"] == 120.0 and s["n_steps"] == 3


@pytest.mark.parametrize("key", ["skipped", "error"])
def test_summarise_side_reports_a_skipped_or_failed_side(key: str) -> None:
    assert summarise_side([{key: "why"}]) == {key: "why"}


def test_prompts_have_one_length_and_split_per_step() -> None:
    prompts = make_prompts(8, seed=0)
    assert len({len(p) for p in prompts}) == 1  # no side pays for padding
    spec = Spec(model_dir="m", prompts=prompts)  # 4 prompts per step
    assert spec.step_prompts(1) == prompts[4:8]


def test_trivial_reward_is_first_character_parity() -> None:
    assert trivial_reward("a") == 1.0  # ord("a") = 97
    assert trivial_reward("b") == 0.0
    assert trivial_reward("") == 0.0


def test_interference_subtracts_our_own_cpu_time() -> None:
    from _common import cpu_seconds, interference

    before = {"machine": 100.0, "own": 10.0, "steal": 1.0}
    after = {"machine": 130.0, "own": 30.0, "steal": 3.0}  # 30 s busy in 10 s, 20 of them ours
    assert interference(before, after, 10.0) == {"other_cores": 1.0, "steal_cores": 0.2}
    assert interference(None, after, 10.0) == {}
    reading = cpu_seconds()
    if reading is not None:  # Linux: the machine has done at least what this process did
        assert reading["machine"] >= 0 and reading["own"] > 0
