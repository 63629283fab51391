"""Names that differ across the transformers versions rlvr supports, resolved per model class.

transformers 5.2x renamed the KV-cache keyword of every model's `forward` from `past_key_values` to
`cache` (and the output field likewise); the old name is deprecated and goes in 5.40.  vLLM's CPU
build pins transformers < 5.20, which only knows the old name.  rlvr passes whichever the model's
class declares, and reads the returned cache under either name.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from torch import nn


def cache_kwarg(module: nn.Module) -> str:
    """The KV-cache keyword of `module.forward`: "cache" (newer transformers) or "past_key_values"."""
    inner = getattr(module, "module", module)  # DistributedDataParallel keeps the model in .module
    return _cache_kwarg(type(inner))


@functools.cache
def _cache_kwarg(cls: type) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def returned_cache(output: Any) -> Any:
    """The KV cache a forward returned (`output.cache`, or `output.past_key_values` before the rename)."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values
