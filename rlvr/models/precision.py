"""Whether bf16 matmuls are fast on a device, so that `bf16_autocast = "auto"` picks the right dtype.

bf16 is only a speed-up where the hardware multiplies bf16 natively: CUDA GPUs from Ampere on,
x86 CPUs with AVX512-BF16 or AMX, Arm CPUs with the BF16 extension.  Elsewhere (an AVX2-only CPU,
say) PyTorch emulates it and a bf16 matmul is ~100x *slower* than fp32 (measured 0.6 vs 77 GFLOP/s
at 4096x512x2048 on a 2-core AVX2 EPYC), so autocasting there turns a minutes-long run into hours.

The answer comes from CPU feature flags, never from timing, so it is the same on every run of a
machine (a timed probe could flip under load and break bitwise resume).  `RLVR_BF16=1` / `=0` in the
environment overrides it.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

ENV_OVERRIDE = "RLVR_BF16"
EMULATED = "bf16 is emulated here (no AVX512-BF16 / AMX / native bf16): ~100x slower than fp32"


@functools.cache
def bf16_is_fast(device_type: str = "cpu") -> bool:
    """True when bf16 matmuls on `device_type` ("cpu", "cuda", ...) are native, not emulated."""
    forced = os.environ.get(ENV_OVERRIDE, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type != "cpu":
        return True  # mps / xpu / other accelerators: trust the backend
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i386", "i686"):
        flags = [
            getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        ]
        return any(f() for f in flags if f is not None)
    if machine in ("aarch64", "arm64"):
        return "bf16" in _cpuinfo_flags()
    return False


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {f for line in text.splitlines() if line.lower().startswith(("flags", "features"))
            for f in line.split(":", 1)[-1].split()}  # fmt: skip


def resolve_bf16(setting: bool | str, device: torch.device | str = "cpu") -> bool:
    """A `bf16_autocast` setting (True / False / "auto") resolved for `device`."""
    if setting == "auto":
        return bf16_is_fast(torch.device(device).type)
    return bool(setting)


def engine_dtype(setting: bool | str, device: torch.device | str = "cpu") -> torch.dtype | None:
    """The dtype a rollout engine should hold its weight copy in: bf16 when fast, else the model's own."""
    return torch.bfloat16 if resolve_bf16(setting, device) else None
