"""`HFEngine.score` with shared prompts (`rollout.score.shared_prompt_states`) against the plain path.

Llama (MHA and GQA), Qwen2 (q/k/v biases made non-zero), Qwen3 (q/k norms): groups interleaved with
singletons, prompts of different lengths, empty and one-token completions, top-k at a temperature —
every row within 1e-5 of the plain forward and of the row scored alone.  A row paired with another
prompt's cache would be off by far more (checked, so the comparison can fail).  Models the path does
not know, and engines on the trainer's own model, score through the plain path."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from rlvr.models.tiny import build_tokenizer
from rlvr.rollout import hf as hf_mod
from rlvr.rollout.hf import HFEngine
from rlvr.rollout.score import split_by_prompt
from tests.rollout.archs import build_arch

SHAPE = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=128)  # fmt: skip


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _model(kind: str, tok) -> torch.nn.Module:
    """llama_mha, llama_gqa, qwen2 or qwen3 (the last three with 2 kv heads)."""
    arch, n_kv = {"llama_mha": ("llama", 4), "llama_gqa": ("llama", 2)}.get(kind, (kind, 2))
    return build_arch(arch, tok, num_key_value_heads=n_kv, **SHAPE)


def _rows(vocab: int) -> tuple[list[list[int]], list[list[int]]]:
    """Three groups (prompts of 5, 9 and 2 tokens) interleaved with two singletons; completions of
    0 to 23 tokens, one empty and one of a single token."""
    g = torch.Generator().manual_seed(1)
    rand = lambda n: torch.randint(3, vocab, (n,), generator=g).tolist()  # noqa: E731
    a, b, c, s1, s2 = rand(5), rand(9), rand(2), rand(7), rand(3)
    prompts = [a, b, a, s1, c, b, a, c, s2, a]
    comps = [rand(n) for n in (12, 23, 0, 6, 1, 17, 9, 4, 11, 20)]
    return prompts, comps


def _flat(scores, field):
    return [x for s in scores for x in (getattr(s, field) or ())]


@pytest.mark.parametrize("kind", ["llama_mha", "llama_gqa", "qwen2", "qwen3"])
def test_shared_prompts_equal_the_plain_path_and_each_row_alone(tok, kind):
    model = _model(kind, tok)
    shared = HFEngine(model, tok, dtype=torch.float32)
    plain = HFEngine(model, tok, dtype=torch.float32, share_score_prompts=False)
    assert shared.share_score_prompts and not plain.share_score_prompts
    prompts, comps = _rows(len(tok))
    got = shared.score(prompts, comps, temperature=0.7, top_k=3)
    want = plain.score(prompts, comps, temperature=0.7, top_k=3)
    alone = [plain.score([p], [c], temperature=0.7, top_k=3)[0] for p, c in zip(prompts, comps)]
    for ref in (want, alone):
        assert [len(s.logprobs) for s in got] == [len(c) for c in comps]
        assert torch.allclose(torch.tensor(_flat(got, "logprobs")), torch.tensor(_flat(ref, "logprobs")), atol=1e-5)
        assert _flat(got, "top_ids") == _flat(ref, "top_ids")
        assert torch.allclose(torch.tensor(_flat(got, "top_logprobs")), torch.tensor(_flat(ref, "top_logprobs")),
                              atol=1e-5)  # fmt: skip
    # the comparison has power: row 0's completion after another group's prompt scores far off
    wrong = plain.score([prompts[1]], [comps[0]], temperature=0.7)[0].logprobs
    assert max(abs(x - y) for x, y in zip(wrong, got[0].logprobs)) > 1e-2


def test_a_group_prompt_runs_once_and_singletons_go_the_plain_way(tok, monkeypatch):
    model = _model("llama_gqa", tok)
    eng = HFEngine(model, tok, dtype=torch.float32)
    prompts, comps = _rows(len(tok))
    shapes: list[tuple[int, ...]] = []
    hook = eng.model.model.register_forward_pre_hook(lambda mod, args, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                                 with_kwargs=True)  # fmt: skip
    try:
        eng.score(prompts, comps)
    finally:
        hook.remove()
    # singletons (rows 3, 8): one plain forward over prompt + completion, left-padded to 3 + 11 tokens;
    # then the 3 distinct group prompts once ([3, 9]) and the 8 group rows' completions but their last token
    assert shapes == [(2, 14), (3, 9), (8, 22)]
    calls = []
    monkeypatch.setattr(hf_mod, "shared_prompt_states", lambda *a: calls.append(a) or 1 / 0)
    eng.score([prompts[3], prompts[8]], [comps[3], comps[8]])  # no prompt repeats: the shared path is not taken
    assert calls == []


def test_models_without_the_shared_path_score_plainly(tok):
    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, n_positions=64)).eval()
    assert not HFEngine(gpt2, tok, dtype=torch.float32).share_score_prompts
    llama = _model("llama_gqa", tok)
    assert not HFEngine(llama, tok, share_weights=True).share_score_prompts  # the trainer's model: plain forward
    eng = HFEngine(gpt2, tok, dtype=torch.float32)
    prompts, comps = _rows(len(tok))
    assert [len(s.logprobs) for s in eng.score(prompts, comps)] == [len(c) for c in comps]


def test_a_group_of_empty_completions_next_to_a_scored_singleton(tok):
    eng = HFEngine(_model("qwen3", tok), tok, dtype=torch.float32)
    plain = HFEngine(eng.model, tok, dtype=torch.float32, share_score_prompts=False)
    got = eng.score([[5, 6], [5, 6], [7]], [[], [], [8, 9]], top_k=2)
    assert got[0].logprobs == got[1].logprobs == () and got[0].top_ids == ()
    assert torch.allclose(torch.tensor(got[2].logprobs), torch.tensor(plain.score([[7]], [[8, 9]])[0].logprobs),
                          atol=1e-6)  # fmt: skip
    one = eng.score([[5, 6], [5, 6]], [[8], [9]])  # one-token completions: the prompt pass alone
    assert torch.allclose(torch.tensor(_flat(one, "logprobs")), torch.tensor(_flat(plain.score([[5, 6]] * 2, [[8], [9]]),
                          "logprobs")), atol=1e-5)  # fmt: skip


def test_split_by_prompt():
    assert split_by_prompt([[1, 2], [3], [1, 2], [4], [3], [1]]) == ([0, 1, 2, 4], [3, 5])
    assert split_by_prompt([[1], [2]]) == ([], [0, 1])
    assert split_by_prompt([]) == ([], [])
