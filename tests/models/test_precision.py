"""bf16_autocast = "auto": bf16 only where the hardware multiplies it natively (rlvr.models.precision)."""

from __future__ import annotations

import pytest
import torch

from rlvr.config import ModelConfig
from rlvr.models import precision
from rlvr.models.precision import bf16_is_fast, engine_dtype, resolve_bf16
from rlvr.models.tiny import build_model, build_tokenizer


@pytest.fixture(autouse=True)
def _fresh_cache():
    bf16_is_fast.cache_clear()
    yield
    bf16_is_fast.cache_clear()


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("on", True), ("0", False), ("false", False)])
def test_environment_override_wins(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv(precision.ENV_OVERRIDE, value)
    assert bf16_is_fast("cpu") is expected
    assert resolve_bf16("auto", "cpu") is expected
    assert engine_dtype("auto", "cpu") == (torch.bfloat16 if expected else None)


def test_cpu_answer_follows_the_feature_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(precision.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(precision.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert bf16_is_fast("cpu") is False  # an AVX2-only CPU emulates bf16: ~100x slower than fp32
    bf16_is_fast.cache_clear()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert bf16_is_fast("cpu") is True


def test_arm_reads_cpuinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(precision.ENV_OVERRIDE, raising=False)
    monkeypatch.setattr(precision.platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"fp", "asimd", "bf16"})
    assert bf16_is_fast("cpu") is True
    bf16_is_fast.cache_clear()
    monkeypatch.setattr(precision, "_cpuinfo_flags", lambda: {"fp", "asimd"})
    assert bf16_is_fast("cpu") is False


def test_explicit_settings_are_not_second_guessed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(precision.ENV_OVERRIDE, "0")
    assert resolve_bf16(True, "cpu") is True
    assert resolve_bf16(False, "cpu") is False


def test_config_default_is_auto_and_accepts_booleans() -> None:
    assert ModelConfig().bf16_autocast == "auto"
    assert ModelConfig(bf16_autocast=True).bf16_autocast is True
    assert ModelConfig(bf16_autocast=False).bf16_autocast is False
    with pytest.raises(ValueError, match="bf16_autocast"):
        ModelConfig(bf16_autocast="sometimes")


@pytest.mark.parametrize(("value", "dtype"), [("1", torch.bfloat16), ("0", torch.float32)])
def test_engine_copy_dtype_follows_auto(
    monkeypatch: pytest.MonkeyPatch, value: str, dtype: torch.dtype
) -> None:
    from rlvr.rollout.hf import HFEngine

    monkeypatch.setenv(precision.ENV_OVERRIDE, value)
    tok = build_tokenizer()
    engine = HFEngine(build_model("1m", tok, 0), tok)
    assert engine.model_dtype == dtype
    assert engine.autocast_dtype is None  # the copy is already in the compute dtype
