"""SFT sequence packing: rows hold whole sequences, attention never crosses them, the loss is unchanged."""

from __future__ import annotations

import json
import random

import pytest
import torch

from rlvr.config import SFTConfig
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.trainer.batching import Sample, micro_batches
from rlvr.trainer.forward import completion_logprobs
from rlvr.trainer.optim import build_optimizer
from rlvr.trainer.packing import collate_packed, pack_rows, packed_batches, packed_logprobs
from rlvr.trainer.sft import SFT_OBJECTIVE, sft_batches, train_sft
from rlvr.trainer.step import optimizer_update

PAD = 0


def _samples(n: int, seed: int = 0, masked: frozenset[int] = frozenset()) -> list[Sample]:
    rng = random.Random(seed)
    return [
        Sample(
            prompt_ids=tuple(rng.randrange(4, 100) for _ in range(rng.randint(1, 9))),
            completion_ids=tuple(rng.randrange(4, 100) for _ in range(rng.randint(1, 12))),
            masked=i in masked,
            index=i,
        )
        for i in range(n)
    ]


def test_rows_hold_every_sample_once_and_fit() -> None:
    samples = _samples(40)
    rows = pack_rows(samples, 32)
    assert sorted(i for row in rows for i in row) == list(range(40))
    assert all(sum(samples[i].length for i in row) <= 32 for row in rows)
    total = sum(s.length for s in samples)
    assert len(rows) <= -(-total // 32) + 2  # first-fit decreasing is near the bound on these lengths


def test_a_sample_longer_than_a_row_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"sample 1 has 21 tokens.*max_len"):
        pack_rows([Sample((5,), (6,)), Sample((5,) * 10, (6,) * 11)], 20)


def test_layout_by_hand() -> None:
    # two sequences in one row: prompt [7, 8] + completion [9, 10]; prompt [11] + completion [12]
    a, b = Sample((7, 8), (9, 10)), Sample((11,), (12,))
    batch = collate_packed([a, b], [[0, 1]], PAD)
    assert batch.input_ids.tolist() == [[7, 8, 9, 10, 11, 12]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 0, 1]]
    assert batch.targets.tolist() == [[8, 9, 10, 11, 12, PAD]]
    # counted: 8->9, 9->10 (first sequence's completion), 11->12; never 10->11 (across sequences)
    assert batch.loss_mask.tolist() == [[False, True, True, False, True, False]]


def test_padding_restarts_positions_and_never_counts() -> None:
    batch = collate_packed([Sample((7, 8), (9, 10)), Sample((11,), (12,))], [[0], [1]], PAD)
    assert batch.input_ids.tolist() == [[7, 8, 9, 10], [11, 12, PAD, PAD]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3], [0, 1, 0, 1]]
    assert batch.loss_mask.tolist() == [[False, True, True, False], [True, False, False, False]]
    masked = collate_packed([Sample((7, 8), (9, 10), masked=True)], [[0]], PAD)
    assert not masked.loss_mask.any()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_logprobs_equal_unpacked(attn: str) -> None:
    """Each sequence sees only itself: per-token logprobs match the one-sequence-per-row forward."""
    torch.manual_seed(0)
    model = build_model("1m", build_tokenizer(), 0).eval()
    model.set_attn_implementation(attn)
    samples = _samples(12, seed=1)
    packed = packed_batches(samples, 40, 100, PAD)[0]
    assert any(len(row) > 1 for row in packed.segments)  # something really was packed
    got = packed_logprobs(model, packed)
    plain = micro_batches(samples, 100, PAD, bucket=False)[0]
    want = completion_logprobs(model, plain, autocast=False)[0]
    assert int(packed.loss_mask.sum()) == int(plain.loss_mask.sum())
    for r, row in enumerate(packed.segments):
        col = 0
        for i in row:
            s = samples[i]
            p, c = len(s.prompt_ids), len(s.completion_ids)
            # packed column col + p - 1 + j predicts completion token j
            torch.testing.assert_close(
                got[r, col + p - 1 : col + p - 1 + c], want[i, :c], rtol=1e-5, atol=1e-5
            )
            col += p + c


def _sft_cfg(tmp_path, packing: bool, micro: int) -> SFTConfig:
    return SFTConfig.model_validate({
        "task": {"name": "arithmetic", "kwargs": {"digits": 3, "ops": "+-", "n_train": 40, "n_test": 8}},
        "data": {"batch_size": 8, "max_len": 96, "packing": packing},
        "optim": {"lr": 3e-3, "micro_batch_size": micro},
        "model": {"bf16_autocast": False},
        "run": {"out_dir": str(tmp_path / ("packed" if packing else "plain")), "steps": 3, "progress": False,
                "tensorboard": False},
    })  # fmt: skip


def test_packed_sft_step_gives_the_unpacked_gradient(tmp_path) -> None:
    tok = build_tokenizer()
    samples = _samples(8, seed=2, masked=frozenset({3}))
    grads = []
    for packing, micro in ((False, 4), (True, 1)):
        model, cfg = build_model("1m", tok, 0), _sft_cfg(tmp_path, packing, micro)
        optim = build_optimizer(model, cfg.optim)
        optim.step = optim.zero_grad = lambda: None  # keep the gradients for inspection
        metrics = optimizer_update(model, optim, sft_batches(samples, cfg, PAD), SFT_OBJECTIVE, temperature=1.0,
                                   autocast=False, grad_clip=None, lr_factor=1.0)  # fmt: skip
        grads.append(([p.grad.clone() for p in model.parameters()], metrics))
    (g_plain, m_plain), (g_packed, m_packed) = grads
    assert m_plain["tokens"] == m_packed["tokens"]
    assert m_plain["loss"] == pytest.approx(m_packed["loss"], rel=1e-5)
    for a, b in zip(g_plain, g_packed):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    # the denominator is the step's completion tokens: masked sample 3 counts nowhere
    expected = sum(len(s.completion_ids) for s in samples if not s.masked)
    assert m_packed["tokens"] == expected


def test_packed_sft_run_learns_and_pads_less(tmp_path) -> None:
    packed = train_sft(_sft_cfg(tmp_path, True, 1))
    plain = train_sft(_sft_cfg(tmp_path, False, 8))
    rows = {
        name: [json.loads(x) for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        for name in ("packed", "plain")
    }
    assert packed.status == plain.status == "completed"
    assert rows["packed"][-1]["loss"] < rows["packed"][0]["loss"]
    assert rows["packed"][0]["padding_frac"] < rows["plain"][0]["padding_frac"]


def test_packed_sft_step_tops_up_to_the_agreed_count_with_empty_micro_batches(tmp_path) -> None:
    """Under DDP / FSDP2 each rank's packed micro-batch count depends on its own lengths; the stage runs
    `agree_count(n)` of them (all-reduce max), the extra ones empty: same loss, metrics and weights."""
    from rlvr.trainer.run import Timer
    from rlvr.trainer.sft import build_sft_stage

    tok = build_tokenizer()
    results, counts = [], []
    for extra in (0, 2):
        stage = build_sft_stage(_sft_cfg(tmp_path, True, 1), model=build_model("1m", tok, 0), tokenizer=tok)
        stage.agree_count = lambda n, extra=extra: counts.append(n) or n + extra
        metrics = stage.step(1, Timer())
        results.append((metrics, [p.detach().clone() for p in stage.model.parameters()]))
    (m0, w0), (m2, w2) = results
    assert counts[0] == counts[1] >= 1  # both stages saw the same real micro-batches
    assert m0["loss"] == m2["loss"] and m0["tokens"] == m2["tokens"] and m0["grad_norm"] == m2["grad_norm"]
    assert all(torch.equal(a, b) for a, b in zip(w0, w2))
