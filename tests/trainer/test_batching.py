"""Micro-batch layout and mask correctness: prompt and padding tokens never contribute."""

from __future__ import annotations

import pytest
import torch

from rlvr.algorithms.aggregate import aggregate
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.trainer.batching import Sample, collate, micro_batches, padding_fraction
from rlvr.trainer.forward import completion_logprobs

PAD = 0


def _samples() -> list[Sample]:
    # prompt/completion lengths (3, 4), (6, 2), (4, 7): P = 6, C = 7
    spec = [(3, 4), (6, 2), (4, 7)]
    return [
        Sample(tuple(range(5, 5 + p)), tuple(range(20, 20 + c)), index=i) for i, (p, c) in enumerate(spec)
    ]


def test_layout_left_pads_prompts_and_right_pads_completions():
    mb = collate(_samples(), PAD)
    assert mb.prompt_len == 6 and mb.targets.shape == (3, 7)
    assert mb.input_ids[0].tolist() == [0, 0, 0, 5, 6, 7, 20, 21, 22, 23, 0, 0, 0]
    assert mb.loss_mask.sum(-1).tolist() == [4, 2, 7]
    assert mb.position_ids[0, 3:10].tolist() == list(range(7))  # real tokens numbered from 0
    # slots: 3 x 13 = 39, real tokens 7 + 8 + 11 = 26 -> padding 13/39
    assert abs(padding_fraction([mb]) - 13 / 39) < 1e-9


def test_masked_sample_has_no_loss_tokens():
    s = Sample((5, 6), (7, 8, 9), masked=True)
    assert not collate([s], PAD).loss_mask.any()


def test_bucketing_sorts_by_length_and_keeps_indices():
    mbs = micro_batches(_samples(), 2, PAD, bucket=True)
    assert [mb.index.tolist() for mb in mbs] == [[1, 0], [2]]  # completion lengths 2, 4 | 7


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_logprobs_match_unpadded_forward(attn):
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    model.set_attn_implementation(attn)
    mb = collate(_samples(), tok.pad_token_id)
    lp, _ = completion_logprobs(model, mb, autocast=False)
    for i, s in enumerate(_samples()):
        ids = torch.tensor([s.prompt_ids + s.completion_ids])
        ref = model(input_ids=ids).logits[0].log_softmax(-1)[len(s.prompt_ids) - 1 : -1]
        ref = ref.gather(-1, torch.tensor(s.completion_ids)[:, None])[:, 0]
        assert torch.allclose(lp[i, : len(s.completion_ids)], ref, atol=1e-5)


def _loss_and_grads(model, mb) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    lp, _ = completion_logprobs(model, mb, autocast=False)
    loss = aggregate(-lp * 1.7, mb.loss_mask, "token_mean")
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


def test_padding_and_masked_tokens_do_not_change_loss_or_gradient():
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    base = collate(_samples(), tok.pad_token_id)
    loss0, grads0 = _loss_and_grads(model, base)
    poisoned = collate(_samples(), tok.pad_token_id)
    pad_slots = poisoned.attention_mask == 0
    poisoned.input_ids[pad_slots] = 42  # arbitrary ids in every padded slot (prompt and completion side)
    poisoned.targets[~poisoned.loss_mask] = 43  # and as targets where the loss mask is False
    loss1, grads1 = _loss_and_grads(model, poisoned)
    assert torch.allclose(loss0, loss1, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads0, grads1))


def test_prompt_tokens_get_no_direct_loss():
    """Changing only a prompt token's *identity as a target* is impossible: targets are completion-only.
    Changing the prompt changes the context (and so the loss) but never adds prompt targets."""
    tok = build_tokenizer()
    mb = collate(_samples(), tok.pad_token_id)
    assert mb.targets.shape[1] == 7 and mb.loss_mask.shape == mb.targets.shape
    assert torch.equal(mb.targets, mb.input_ids[:, mb.prompt_len :])


def _grouped_samples() -> list[Sample]:
    g = torch.Generator().manual_seed(0)
    out = []
    for gi, p in enumerate([3, 6]):  # two groups of three samples, prompts of different lengths
        prompt = tuple(torch.randint(4, 60, (p,), generator=g).tolist())
        for j in range(3):
            c = 2 + (3 * j + gi) % 5
            out.append(
                Sample(prompt, tuple(torch.randint(4, 60, (c,), generator=g).tolist()), index=len(out))
            )
    return out


def _run(model, mb, *, share: bool, autocast: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    model.zero_grad()
    lp, _ = completion_logprobs(model, mb, autocast=autocast, share_prefix=share)
    (lp * mb.loss_mask).sum().backward()
    return (lp * mb.loss_mask).detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("autocast, tol", [(False, 1e-5), (True, 3e-2)])
def test_shared_prefix_forward_equals_plain_forward(autocast, tol, attn):
    """The fast path (each prompt once, KV cache reused by its group) computes the same function."""
    tok = build_tokenizer()
    model = build_model("1m", tok, 0)
    model.set_attn_implementation(attn)
    mb = collate(_grouped_samples(), tok.pad_token_id)
    assert mb.prefix_rows.tolist() == [0, 3] and mb.prefix_index.tolist() == [0, 0, 0, 1, 1, 1]
    lp_plain, g_plain = _run(model, mb, share=False, autocast=autocast)
    lp_fast, g_fast = _run(model, mb, share=True, autocast=autocast)
    assert torch.allclose(lp_plain, lp_fast, atol=10 * tol)
    for a, b in zip(g_plain, g_fast):  # relative: bf16 sums the shared prompt's gradient in another order
        assert float((a - b).norm() / a.norm().clamp_min(1e-12)) < tol
