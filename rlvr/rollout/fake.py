"""`FakeEngine`: a deterministic, torch-free engine for component tests of the trainer and evaluation.

Completions come from a script — a callable `(prompt_ids, sample_index) -> str` or a list of
strings used in turn — or, without one, are pseudo-random R1-style texts derived from a hash of
(seed, params.seed, prompt, sample index).  Token ids are the tokenizer's ids of the text when a
tokenizer is given (no special tokens added), else the characters' code points.

Logprobs are a fixed function of (prompt length, position, token, weights version), the same in
`generate` and `score`, so a fake trainer step sees zero sampler/trainer mismatch until
`update_weights` moves the version (which changes every logprob, as an update would).
A scripted text that fits in `max_new_tokens` finishes with "stop" (no eos token is appended);
one that does not is truncated with "length"; `stop_strings` cut the text after the string.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlvr.rollout.base import SamplingParams, TokenScores
from rlvr.types import Completion

Script = Callable[[tuple[int, ...], int], str] | Sequence[str]


class FakeEngine:
    """Scripted or pseudo-random completions with deterministic fake logprobs (see module docstring)."""

    def __init__(self, script: Script | None = None, *, tokenizer: Any = None, seed: int = 0) -> None:
        self.script, self.tokenizer, self.seed = script, tokenizer, seed
        self.version = 0
        self.calls: list[tuple[int, SamplingParams]] = []  # (number of prompts, params) per generate
        self._next = 0  # position in a list script

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        self.calls.append((len(prompts), params))
        return [[self._complete(tuple(p), k, params) for k in range(params.n)] for p in prompts]

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], *,
        temperature: float = 1.0, top_k: int = 0,
    ) -> list[TokenScores]:  # fmt: skip
        """The same fake logprobs `generate` reports (divided by `temperature`; no top-k candidates)."""
        if len(prompts) != len(completions):
            raise ValueError(f"score got {len(prompts)} prompts but {len(completions)} completions")
        return [TokenScores(tuple(x / temperature for x in self._logprobs(len(p), c)))
                for p, c in zip(prompts, completions)]  # fmt: skip

    def update_weights(self, state_dict: Mapping[str, Any], *, version: int) -> int:
        self.version = int(version)
        return self.version

    def fingerprint(self) -> str:
        return f"fake-s{self.seed}-v{self.version}"

    # ------------------------------------------------------------------
    def _text(self, prompt: tuple[int, ...], k: int, params: SamplingParams) -> str:
        if callable(self.script):
            return self.script(prompt, k)
        if self.script is not None:
            text = self.script[self._next % len(self.script)]
            self._next += 1
            return text
        rng = random.Random(zlib.crc32(repr((self.seed, params.seed, prompt, k)).encode()))
        answer = rng.randint(0, 20)
        if rng.random() < 0.5:
            return f"<think>{rng.randint(0, 9)}+{rng.randint(0, 9)}</think><answer>{answer}</answer>"
        return f"the answer is {answer}"

    def _encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            return [ord(c) for c in text]
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _complete(self, prompt: tuple[int, ...], k: int, params: SamplingParams) -> Completion:
        text = self._text(prompt, k, params)
        reason = "stop"
        hits = [text.find(s) + len(s) for s in params.stop_strings if s in text]
        if hits:
            text = text[: min(hits)]
        ids = self._encode(text)
        if len(ids) > params.max_new_tokens:
            ids, reason = ids[: params.max_new_tokens], "length"
            text = self.tokenizer.decode(ids) if self.tokenizer is not None else "".join(map(chr, ids))
        return Completion(text, tuple(ids), tuple(self._logprobs(len(prompt), ids)), reason)

    def _logprobs(self, prompt_len: int, ids: Sequence[int]) -> list[float]:
        # In [-2.5, -0.05]: varied enough to exercise ratios, never 0 or -inf.
        return [
            -0.05 - ((t * 31 + j * 7 + prompt_len * 13 + self.version * 17) % 50) / 20
            for j, t in enumerate(ids)
        ]
