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


@runtime_checkable
class Engine(Protocol):
    """Generate, score, and sync weights.

    `generate` returns, for each prompt, `params.n` completions in sample order.
    `score` returns, for each (prompt_ids, completion_ids) pair, the log-probability of each
    completion token under the engine's current weights (temperature 1, no sampling filters).
    `load_weights` takes a state dict (name -> tensor) from the trainer's policy.
    `fingerprint` identifies the weights for caches (changes when weights change).
    """

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams
    ) -> list[list[Completion]]: ...

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]
    ) -> list[list[float]]: ...

    def load_weights(self, state_dict: Mapping[str, Any]) -> None: ...

    def fingerprint(self) -> str: ...


def decode_completion(tokenizer: Any, token_ids: Sequence[int]) -> str:
    """Completion text: special tokens kept (so `<think>`/`<answer>` tags survive even where a
    tokenizer marks them special), only eos and padding dropped."""
    drop = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
    return tokenizer.decode([t for t in token_ids if t not in drop], skip_special_tokens=False)
