"""RL micro-batch packing: a group's prompt once, its completions after it; the loss does not change.

Packed rows hold the same tokens at the same positions with the same keys visible to each token as the
unpacked micro-batches, so logprobs, losses and gradients agree to fp32 rounding (the matmuls run on
other shapes): measured max |d logprob| ~1e-6, loss rel ~1e-7, max |d grad| ~1e-8.
"""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from rlvr.config import RLConfig
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.trainer import build
from rlvr.trainer.batching import Sample, micro_batches, padding_fraction
from rlvr.trainer.forward import completion_logprobs
from rlvr.trainer.optim import build_optimizer
from rlvr.trainer.rl import RLStage
from rlvr.trainer.rl_packing import empty_batch, pack_groups, packed_micro_batch, packed_micro_batches
from rlvr.trainer.step import optimizer_update

PAD = 0


def _groups(n_groups: int = 4, size: int = 4, seed: int = 0, masked: frozenset[int] = frozenset()) -> list[Sample]:
    """Groups of `size` completions of one prompt, lengths 0-14 (an empty one, a masked one)."""
    rng = random.Random(seed)
    out: list[Sample] = []
    for _ in range(n_groups):
        prompt = tuple(rng.randrange(4, 100) for _ in range(rng.randint(2, 7)))
        for _ in range(size):
            i = len(out)
            comp = tuple(rng.randrange(4, 100) for _ in range(0 if i == 6 else rng.randint(1, 14)))
            out.append(Sample(prompt, comp, sampler_logprobs=tuple(-rng.uniform(1, 5) for _ in comp),
                              ref_logprobs=tuple(-rng.uniform(1, 5) for _ in comp),
                              advantage=rng.uniform(-1.5, 1.5), masked=i in masked, index=i))  # fmt: skip
    return out


def test_layout_by_hand() -> None:
    # group A: prompt [7, 8], completions [9, 10] and [11]; group B: prompt [12], completion [13, 14]
    a1, a2, b1 = Sample((7, 8), (9, 10), index=0), Sample((7, 8), (11,), index=1), Sample((12,), (13, 14), index=2)
    mb = packed_micro_batch([a1, a2, b1], [[((7, 8), [0, 1]), ((12,), [2])]], PAD)
    pk = mb.packed
    assert pk.input_ids.tolist() == [[7, 8, 9, 10, 11, 12, 13, 14]]
    assert pk.position_ids.tolist() == [[0, 1, 2, 3, 2, 0, 1, 2]]  # completion [11] continues the prompt at 2
    allowed = pk.allowed[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0, 0, 0, 0],  # 7
        [1, 1, 0, 0, 0, 0, 0, 0],  # 8
        [1, 1, 1, 0, 0, 0, 0, 0],  # 9: its prompt and itself
        [1, 1, 1, 1, 0, 0, 0, 0],  # 10
        [1, 1, 0, 0, 1, 0, 0, 0],  # 11: its prompt, never the other completion
        [0, 0, 0, 0, 0, 1, 0, 0],  # 12: another segment
        [0, 0, 0, 0, 0, 1, 1, 0],
        [0, 0, 0, 0, 0, 1, 1, 1],
    ]
    # [B, C] = [3, 2]; token j of sample b is predicted by column gather, lands at b * C + j
    assert mb.targets.tolist() == [[9, 10], [11, PAD], [13, 14]]
    assert pk.gather.tolist() == [1, 2, 1, 5, 6]  # 8->9, 9->10, 8->11, 12->13, 13->14
    assert pk.scatter.tolist() == [0, 1, 2, 4, 5]
    assert pk.num_tokens == 8 and padding_fraction([mb]) == 0.0


def test_rows_fit_hold_every_completion_once_and_are_deterministic() -> None:
    samples = _groups(6, 8, seed=3, masked=frozenset({9}))
    rows = pack_groups(samples, 40)  # the empty completion (6) and the masked sample (9) are left out
    placed = [i for row in rows for _, ii in row for i in ii]
    assert sorted(placed) == [i for i, s in enumerate(samples) if s.completion_ids and not s.masked]
    for row in rows:
        assert sum(len(p) + sum(len(samples[i].completion_ids) for i in ii) for p, ii in row) <= 40
        assert all(samples[i].prompt_ids == p for p, ii in row for i in ii)
    assert pack_groups(samples, 40) == rows
    batches = packed_micro_batches(samples, 4, PAD, row_len=40)
    longest = max(s.length for s in samples)
    assert all(mb.packed.input_ids.numel() <= 4 * longest for mb in batches)  # the token budget
    # prompts once per segment: fewer real tokens than the unpacked sequences hold
    assert sum(mb.packed.num_tokens for mb in batches) < sum(s.length for s in samples if s.completion_ids)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_logprobs_and_entropy_equal_unpacked(attn: str) -> None:
    torch.manual_seed(0)
    model = build_model("1m", build_tokenizer(), 0).eval()
    model.set_attn_implementation(attn)
    samples = _groups(4, 4, seed=1)
    want_lp, want_ent = completion_logprobs(model, micro_batches(samples, 100, PAD, bucket=False)[0],
                                            temperature=0.7, autocast=False)  # fmt: skip
    batches = packed_micro_batches(samples, 3, PAD, row_len=30)
    assert len(batches) > 1 and any(len(ii) > 1 for row in pack_groups(samples, 30) for _, ii in row)  # shared
    seen = 0
    for mb in batches:
        assert mb.packed.allowed.shape[-1] <= 30
        lp, ent = completion_logprobs(model, mb, temperature=0.7, autocast=False)
        for b, i in enumerate(mb.index.tolist()):
            c = len(samples[i].completion_ids)
            torch.testing.assert_close(lp[b, :c], want_lp[i, :c], rtol=0, atol=1e-5)
            torch.testing.assert_close(ent[b, :c], want_ent[i, :c], rtol=0, atol=1e-5)
            assert not lp[b, c:].any()  # padded slots: 0
            seen += 1
    assert seen == sum(bool(s.completion_ids) for s in samples)


def _cfg(objective: str, aggregation: str, packing: bool, mu: int = 1) -> RLConfig:
    return RLConfig.model_validate({
        "task": {"name": "sort"}, "rollout": {"group_size": 4, "prompts_per_step": 4, "max_new_tokens": 16},
        "algorithm": {"objective": objective, "aggregation": aggregation, "correction": "tis", "mu": mu,
                      "kl": {"beta": 0.05}},
        "optim": {"lr": 1e-3, "micro_batch_size": 4, "packing": packing, "pack_len": 24},
        "run": {"out_dir": "unused"},
    })  # fmt: skip


def _stage(cfg: RLConfig, agree=int) -> SimpleNamespace:
    return SimpleNamespace(config=cfg, tokenizer=SimpleNamespace(pad_token_id=PAD), agree_count=agree)


def _update(cfg: RLConfig, samples: list[Sample], agree=int) -> tuple[list[torch.Tensor], dict, int]:
    model = build_model("1m", build_tokenizer(), 0).train()
    build.set_attention(model, "eager")
    optim = build_optimizer(model, cfg.optim)
    optim.step = optim.zero_grad = lambda: None  # keep the gradients for inspection
    batches = RLStage._micro_batches(_stage(cfg, agree), samples)  # type: ignore[arg-type]
    metrics = optimizer_update(model, optim, batches, build.build_objective(cfg), temperature=1.0, autocast=False,
                               grad_clip=None, lr_factor=1.0, coefs={"kl": 0.05})  # fmt: skip
    return [p.grad.clone() for p in model.parameters()], metrics, len(batches)


@pytest.mark.parametrize(("objective", "aggregation"), [
    ("ppo_clip", "token_mean"), ("ppo_clip", "seq_mean_token_mean"), ("ppo_clip", "seq_mean_token_sum_norm"),
    ("gspo", "seq_mean_token_mean"),
])  # fmt: skip
def test_packed_step_gives_the_unpacked_loss_and_gradient(objective: str, aggregation: str) -> None:
    samples = _groups(4, 4, seed=2, masked=frozenset({3}))
    g_plain, m_plain, _ = _update(_cfg(objective, aggregation, False), samples)
    g_packed, m_packed, n = _update(_cfg(objective, aggregation, True), samples)
    assert n > 1  # gradient accumulation over packed micro-batches
    assert m_plain["tokens"] == m_packed["tokens"] == sum(len(s.completion_ids) for s in samples if not s.masked)
    assert m_packed["loss"] == pytest.approx(m_plain["loss"], rel=1e-5, abs=1e-7)
    assert m_packed["kl"] == pytest.approx(m_plain["kl"], rel=1e-5)
    assert max(float((a - b).abs().max()) for a, b in zip(g_plain, g_packed)) <= 1e-6
    assert max(float(a.abs().max()) for a in g_plain) > 1e-3  # a real gradient


def test_empty_micro_batches_change_nothing() -> None:
    """What a rank with fewer packed micro-batches runs to match the others: loss 0, gradient 0."""
    cfg, samples = _cfg("ppo_clip", "seq_mean_token_mean", True), _groups(4, 4, seed=4)
    g, m, n = _update(cfg, samples)
    g2, m2, n2 = _update(cfg, samples, agree=lambda k: k + 2)  # as if another rank had two more
    assert n2 == n + 2
    assert m2 == m  # the loss, the token count and every metric (an empty micro-batch has no say)
    assert all(torch.equal(a, b) for a, b in zip(g, g2))
    empty = empty_batch(PAD)
    assert not empty.loss_mask.any() and empty.packed is None


def test_an_attention_without_4d_masks_is_refused_with_what_to_do() -> None:
    from rlvr.config import ConfigError

    mb = packed_micro_batches(_groups(1, 2), 4, PAD)[0]
    with pytest.raises(ConfigError, match=r"optim\.packing needs eager or SDPA.*flash_attention_2"):
        mb.packed.attention_mask("flash_attention_2", torch.float32, torch.device("cpu"))


def test_all_empty_completions_still_give_one_micro_batch() -> None:
    batches = packed_micro_batches([Sample((5, 6), (), index=0), Sample((5, 6), (), index=1)], 4, PAD)
    assert len(batches) == 1 and not batches[0].loss_mask.any()


def test_packing_is_refused_outside_rl() -> None:
    from rlvr.config import SFTConfig

    with pytest.raises(ValueError, match=r"use data\.packing"):
        SFTConfig.model_validate({"task": {"name": "sort"}, "optim": {"packing": True}})


def test_packed_run_resumes_bitwise_and_tracks_the_unpacked_run(tmp_path) -> None:
    """A packed RL run (KL in the loss, mu = 2: the old-logprob pass is packed too, truncated IS) stopped
    at step 2 and resumed ends bitwise equal to the uninterrupted packed run; and it takes the steps the
    unpacked run takes (to fp32 rounding, amplified a little by Adam over 4 steps)."""
    import json
    import os
    import signal

    from tests.trainer.test_rl_loop import ALGO, _run, _same, rl_config

    packed = {"packing": True, "micro_batch_size": 2}

    def cfg(name: str, **run):
        return rl_config(tmp_path / name, algorithm=ALGO, optim=packed, run={"steps": 4, **run})

    _, full = _run(cfg("full"))

    def stop_at_2(ctx):
        if ctx.step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    first, _ = _run(cfg("cut", eval_every=1), callbacks=(stop_at_2,))
    assert first.status == "interrupted" and first.step == 2
    second, resumed = _run(cfg("cut", eval_every=1), resume=True)
    assert second.status == "completed" and _same(full, resumed)
    _, plain = _run(rl_config(tmp_path / "plain", algorithm=ALGO, optim={"micro_batch_size": 2}, run={"steps": 4}))
    assert not _same(full, plain)  # other shapes, other rounding ...
    drift = max(float((a - b).abs().max()) for a, b in zip(full.state_dict().values(), plain.state_dict().values()))
    assert drift <= 1e-4  # ... but the same steps (lr 1e-3: one step moves a weight by ~1e-3)
    rows = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    plain_rows = [json.loads(x) for x in (tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()]
    assert [r["length/mean"] for r in rows] == [r["length/mean"] for r in plain_rows]  # the same samples
    assert all(r["padding_frac"] < p["padding_frac"] for r, p in zip(rows, plain_rows))
