"""Torch-free records that cross layer boundaries (layer L0).

Every stage hands the next one these typed records instead of dict bags: a task yields
`Example`s, an engine returns `Completion`s, a verifier produces a `Score`, and `collect`
bundles one prompt's samples into a `Group`.  Nothing here imports torch or another rlvr module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class Example:
    """One problem: a stable id, the question text, its gold answer, and task-specific data.

    `meta` carries what the verifier needs beyond the gold (countdown numbers and target,
    code tests, ...).  `prompt` is the bare question; a task's `render` turns it into model input.
    """

    id: str
    prompt: str
    gold: str
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Completion:
    """One sampled continuation of a prompt, as the rollout engine produced it.

    `token_ids` are the generated tokens only (no prompt, no padding), including the stop
    token when generation stopped on one.  `sampler_logprobs[i]` is the engine's log-probability
    of `token_ids[i]` under the distribution it actually sampled from (after temperature); the
    trainer recomputes `old_logprobs` itself and uses these only to measure and correct the
    sampler/trainer mismatch.  `finish_reason` is "stop" (a stop token or string ended it) or
    "length" (it hit max_new_tokens: a truncated completion).
    """

    text: str
    token_ids: tuple[int, ...]
    sampler_logprobs: tuple[float, ...] | None = None
    finish_reason: FinishReason = "stop"

    def __post_init__(self) -> None:
        if self.sampler_logprobs is not None and len(self.sampler_logprobs) != len(self.token_ids):
            raise ValueError(
                f"Completion.sampler_logprobs has {len(self.sampler_logprobs)} entries but token_ids has "
                f"{len(self.token_ids)}: the engine must report one logprob per generated token"
            )

    @property
    def truncated(self) -> bool:
        return self.finish_reason == "length"


@dataclass(frozen=True, slots=True)
class Score:
    """A reward: `total` is the weighted sum of the named `parts` (e.g. accuracy, format).

    Logs show each part separately so a rising total can be told apart from format gaming.
    """

    total: float
    parts: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def weighted(cls, parts: Mapping[str, float], weights: Mapping[str, float]) -> Score:
        """Combine named parts with weights; a part without a weight counts with weight 1.0."""
        total = math.fsum(weights.get(name, 1.0) * value for name, value in parts.items())
        return cls(total=total, parts=dict(parts))


@dataclass(slots=True)
class Group:
    """All samples drawn for one prompt: the unit GRPO-style advantages are computed over.

    `prompt` is the rendered model input text and `prompt_ids` its token ids; `scores[i]` scores
    `completions[i]` (empty until the verifier has run).  `prefix` is the part of the R1 layout the
    prompt left open (e.g. "<think>"), which grading prepends to each completion
    (`rlvr.tasks.base.open_prefix`).
    """

    example: Example
    prompt: str
    prompt_ids: tuple[int, ...]
    completions: list[Completion]
    scores: list[Score] = field(default_factory=list)
    prefix: str = ""
    policy_version: int | None = None  # the engine's weights version that sampled it (None: not recorded)

    @property
    def rewards(self) -> list[float]:
        return [s.total for s in self.scores]

    @property
    def size(self) -> int:
        return len(self.completions)
