"""Test doubles for evaluation: a character tokenizer, a toy addition task, and fake engines."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from rlvr.rollout.base import SamplingParams
from rlvr.types import Completion, Example, Score

ANSWER = re.compile(r"<answer>(.*?)</answer>")


class CharTokenizer:
    """One token per character (token id = code point)."""

    eos_token_id = None

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(ch) for ch in text]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids)


class AdditionTask:
    """Example i asks "i+i"; gold is 2i.  accuracy: numeric match; format: text starts with <answer>."""

    name = "toy_add"

    def __init__(self, size: int = 6) -> None:
        self._examples = [Example(id=f"q{i}", prompt=f"{i}+{i}", gold=str(2 * i)) for i in range(size)]

    def examples(self, split: str) -> Sequence[Example]:
        return self._examples

    def render(self, example: Example) -> str:
        return f"Q: {example.prompt} A:"

    def messages(self, example: Example) -> list[dict[str, str]]:
        return [{"role": "user", "content": example.prompt}]

    def extract(self, completion: str) -> str | None:
        m = ANSWER.search(completion)
        return m.group(1).strip() if m else None

    def equivalent(self, a: str, b: str, example: Example) -> bool:
        try:
            return math.isclose(float(a), float(b))
        except ValueError:
            return a == b

    def score(self, example: Example, completion: str) -> Score:
        ans = AdditionTask.extract(self, completion)
        acc = float(ans is not None and self.equivalent(ans, example.gold, example))
        fmt = float(completion.startswith("<answer>"))
        return Score.weighted({"accuracy": acc, "format": fmt}, {"accuracy": 1.0, "format": 0.2})


def _completion(text: str, logprob: float = -1.0) -> Completion:
    ids = tuple(ord(ch) for ch in text)
    return Completion(text=text, token_ids=ids, sampler_logprobs=tuple([logprob] * len(ids)))


class _CountingEngine:
    """Shared bookkeeping: counts calls and generated samples; can crash after `crash_after_calls`."""

    def __init__(self, crash_after_calls: int | None = None, fingerprint: str = "fake-v1") -> None:
        self.calls = 0
        self.generated = 0
        self.crash_after_calls = crash_after_calls
        self._fingerprint = fingerprint
        self.requests: list[tuple[tuple[int, ...], int, int | None]] = []

    def _count(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> None:
        if self.crash_after_calls is not None and self.calls >= self.crash_after_calls:
            raise RuntimeError("simulated crash (the evaluation process was killed)")
        self.calls += 1
        self.generated += len(prompts) * params.n
        self.requests.extend((tuple(p), params.n, params.seed) for p in prompts)

    def score(
        self, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]]
    ) -> list[list[float]]:
        return [[-1.0] * len(c) for c in completions]

    def load_weights(self, state_dict: Mapping[str, Any]) -> None:
        self._fingerprint += "+"

    def fingerprint(self) -> str:
        return self._fingerprint


class RandomEngine(_CountingEngine):
    """Sample j of a call is a pure function of (prompt, params.seed, j): right, wrong, rewritten, or junk."""

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        self._count(prompts, params)
        out = []
        for p in prompts:
            text = "".join(chr(i) for i in p)
            gold = 2 * int(text.split("+")[1].split()[0])
            group = []
            for j in range(params.n):
                rng = random.Random(f"{text}|{params.seed}|{j}")
                choice = rng.choice(["right", "rewritten", "wrong", "wrong", "junk"])
                body = {"right": f"{gold}", "rewritten": f"{gold}.0", "wrong": f"{gold + 1}"}.get(choice)
                answer = "no idea" if body is None else f"<answer>{body}</answer>"
                group.append(_completion(answer, logprob=-rng.random()))
            out.append(group)
        return out


class ScriptedEngine(_CountingEngine):
    """Returns `script[prompt_text][j]` for sample j (no cache offsets: use with a fresh cache)."""

    def __init__(
        self, script: Mapping[str, Sequence[str]], logprobs: Mapping[str, Sequence[float]] | None = None
    ):
        super().__init__()
        self.script = script
        self.logprobs = logprobs or {}

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[list[Completion]]:
        self._count(prompts, params)
        out = []
        for p in prompts:
            key = "".join(chr(i) for i in p)
            lps = self.logprobs.get(key, [-1.0] * params.n)
            out.append([_completion(self.script[key][j], lps[j]) for j in range(params.n)])
        return out


class ChatCharTokenizer(CharTokenizer):
    chat_template = "role: content lines, then 'assistant: '"

    def apply_chat_template(
        self, messages, add_generation_prompt: bool = False, tokenize: bool = True
    ) -> str:
        assert not tokenize and add_generation_prompt
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


class PrefixAdditionTask(AdditionTask):
    """Like rlvr's VerifiedTask: the plain prompt opens "<answer>", which grading prepends unless told."""

    name = "toy_add_prefix"

    def render(self, example: Example) -> str:
        return f"Q: {example.prompt} A:<answer>"

    def extract(self, completion: str, *, prefix: str | None = None) -> str | None:
        return super().extract(("<answer>" if prefix is None else prefix) + completion)

    def score(self, example: Example, completion: str, *, prefix: str | None = None) -> Score:
        return super().score(example, ("<answer>" if prefix is None else prefix) + completion)
