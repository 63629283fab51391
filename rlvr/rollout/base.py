"""The `Engine` protocol: what the trainer and evaluation need from a generator.

An engine generates `n` samples per prompt and reports the sampler's per-token logprobs; it scores
given token ids (prefill logprobs, for reference and teacher models); and it takes new weights
from the trainer.  HF, vLLM and fake engines implement it; nothing above this layer knows which.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from rlvr.types import Completion


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample.  `temperature == 0` means greedy decoding.

    `stop_token_ids` end a sample (the token is kept in the output); `stop_strings` end it once the
    decoded text contains one (the text is cut after it).  `min_new_tokens` suppresses stopping
    before that many tokens (used to force fixed-length generation in benchmarks).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 256
    min_new_tokens: int = 0
    stop_token_ids: tuple[int, ...] = ()
    stop_strings: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One prompt to sample from: its token ids (already rendered and tokenised)."""

    prompt_ids: tuple[int, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenScores:
    """`Engine.score`'s answer for one (prompt, completion) pair, one entry per completion token.

    `logprobs[j]`: log p(completion[j] | prompt + completion[:j]) at the requested temperature;
    with `top_k > 0`, `top_ids[j]` / `top_logprobs[j]` are that position's k most likely tokens and
    their logprobs (descending), for distillation; None otherwise.
    """

    logprobs: tuple[float, ...]
    top_ids: tuple[tuple[int, ...], ...] | None = None
    top_logprobs: tuple[tuple[float, ...], ...] | None = None


class WeightSyncError(RuntimeError):
    """The engine did not take the trainer's weights (wrong version, or its logprobs disagree)."""


@runtime_checkable
class Engine(Protocol):
    """Generate, score, and take versioned weights.

    `generate` returns, for each prompt, `params.n` completions in sample order.
    `score` returns, for each (prompt_ids, completion_ids) pair, the logprobs of the completion tokens
    under the engine's current weights at `temperature` (no top-k/top-p truncation), plus each
    position's `top_k` candidates when `top_k > 0`: reference and teacher logprobs go through it.
    `update_weights(state_dict, version=v)` loads the trainer's policy weights and returns the version
    the engine now holds (the trainer checks it equals `v`, then checks logprobs; see
    `rlvr.trainer.sync`); `version` is the last version taken (0: the weights it was built with).
    `fingerprint` identifies the weights for caches (changes when weights change).
    """

    version: int

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]: ...

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
        temperature: float = 1.0, top_k: int = 0,
    ) -> list[TokenScores]: ...  # fmt: skip

    def update_weights(self, state_dict: Mapping[str, Any], *, version: int) -> int: ...

    def fingerprint(self) -> str: ...


def decode_completion(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """Completion text: special tokens kept (so `<think>`/`<answer>` tags survive even where a
    tokenizer marks them special), only eos and padding dropped."""
    drop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    return tokenizer.decode([t for t in token_ids if t not in drop], skip_special_tokens=False)
