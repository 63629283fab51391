"""Torch-free answer verifiers (layer L1): pure `str -> float` functions that never raise on model text.

- `region`: where the graded answer is (`extract_answer`, `answer_region`, `clip_tail`).
- `math`: `verify_math` (math-verify under a hard deadline), `math_equivalent`, gold validation.
- `format`: `think_answer_format` (strict R1 layout), `tag_count_reward` (partial).
- `countdown`: `verify_countdown`, `countdown_value` (own parser, exact fractions).
- `code`: the sandboxed test runner (`run_tests`); imported lazily, it starts processes.
"""

from __future__ import annotations

from typing import Any

from rlvr.verifiers.countdown import countdown_value, verify_countdown
from rlvr.verifiers.format import tag_count_reward, think_answer_format
from rlvr.verifiers.math import (
    gold_parses,
    math_equivalent,
    math_equivalent_batch,
    validate_golds,
    verify_math,
    verify_math_batch,
)
from rlvr.verifiers.region import answer_region, clip_tail, extract_answer, last_boxed

__all__ = [
    "answer_region",
    "clip_tail",
    "countdown_value",
    "extract_answer",
    "gold_parses",
    "last_boxed",
    "math_equivalent",
    "math_equivalent_batch",
    "tag_count_reward",
    "think_answer_format",
    "validate_golds",
    "verify_countdown",
    "verify_math",
    "verify_math_batch",
]


def __getattr__(name: str) -> Any:
    """`run_tests` / `CodeResult` come from `rlvr.verifiers.code`, imported on first use."""
    if name in ("run_tests", "CodeResult"):
        from rlvr.verifiers import code

        return getattr(code, name)
    raise AttributeError(f"module 'rlvr.verifiers' has no attribute {name!r}")
