"""The KV-cache keyword across transformers versions: the name the model's class declares."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import torch
from transformers import LlamaForCausalLM

from rlvr.models.compat import cache_kwarg, returned_cache
from rlvr.models.tiny import build_model, build_tokenizer


class _OldStyle(torch.nn.Module):  # a model class from before the rename
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):
        return SimpleNamespace(past_key_values=past_key_values)


def test_the_keyword_is_the_one_the_installed_transformers_declares():
    declared = inspect.signature(LlamaForCausalLM.forward).parameters
    want = "cache" if "cache" in declared else "past_key_values"
    model = build_model("1m", build_tokenizer(), 0)
    assert cache_kwarg(model) == want == cache_kwarg(model.model)
    assert cache_kwarg(_OldStyle()) == "past_key_values"
    wrapped = SimpleNamespace(module=_OldStyle())  # DDP keeps the model in .module
    assert cache_kwarg(wrapped) == "past_key_values"


def test_the_returned_cache_is_read_under_either_name():
    assert returned_cache(SimpleNamespace(cache="new")) == "new"
    assert returned_cache(SimpleNamespace(past_key_values="old")) == "old"
    assert returned_cache(SimpleNamespace(cache=None, past_key_values="old")) == "old"


def test_a_forward_with_the_resolved_keyword_reuses_the_cache():
    from transformers import DynamicCache

    model = build_model("1m", build_tokenizer(), 0).eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        full = model(input_ids=ids).logits[0, -1]
        first = model(input_ids=ids[:, :3], use_cache=True, **{cache_kwarg(model): DynamicCache()})
        last = model(input_ids=ids[:, 3:], use_cache=True, **{cache_kwarg(model): returned_cache(first)})
    assert torch.allclose(last.logits[0, -1], full, atol=1e-5)
