"""The `Task` protocol: a task owns its data, its prompt template and its verifier.

(After nanochat's `tasks/`.)  Tasks are torch-free; the rollout layer renders prompts through
`render` and scores completions through `score`; evaluation votes over `extract` + `equivalent`.

Templates and the completion prefix.  A template may end the prompt inside the R1 layout, e.g.
`"{question}\\n<think>"`: the model's completion then starts *inside* the think block.  The text
the model wrote is graded as it reads after the prompt, so `score` and `extract` prepend the
template's `prefix` ("<think>") before checking the format or locating the answer, and
`solution()` returns the text the model should emit *after* `render(example)`:
`task.prefix + task.solution(ex)` is the full `<think>…</think><answer>…</answer>` layout.
The chat path (`messages`) never ends inside a tag; score its completions with `prefix=""`.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rlvr.types import Example, Score
from rlvr.verifiers.format import think_answer_format
from rlvr.verifiers.region import extract_answer

# The R1-style instruction (DeepSeek-R1 §2.2.1, Table 1), shortened for small models.
R1_SYSTEM_PROMPT = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. The reasoning process and answer are enclosed within <think> </think> and "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>."
)


@runtime_checkable
class Task(Protocol):
    """What every task provides.

    - `examples(split)`: the problems of a split ("train" or "test"), deterministic for the task's seed.
    - `render(example)`: the model input text for plain (base / tiny) models.
    - `messages(example)`: the same prompt as chat messages, for tokenizers with a chat template.
    - `score(example, completion)`: the reward, a `Score` whose parts include "accuracy" (and "format"
      where the task rewards it).  Never raises on model text.
    - `extract(completion)`: the final answer string the verifier would grade, or None.
    - `equivalent(a, b, example)`: whether two extracted answers are the same answer (for maj@k voting).
    """

    name: str

    def examples(self, split: str) -> Sequence[Example]: ...

    def render(self, example: Example) -> str: ...

    def messages(self, example: Example) -> list[dict[str, str]]: ...

    def score(self, example: Example, completion: str) -> Score: ...

    def extract(self, completion: str) -> str | None: ...

    def equivalent(self, a: str, b: str, example: Example) -> bool: ...


@dataclass(frozen=True)
class Template:
    """How a plain-text prompt is laid out; `prefix` is the part of the R1 layout the prompt opens."""

    name: str
    text: str  # formatted with question= and system=
    prefix: str


# "short" suits the tiny character-level model (every prompt character costs a token);
# "r1" is DeepSeek-R1's layout with the full instruction; "plain" lets the model open <think> itself.
TEMPLATES: dict[str, Template] = {
    "short": Template("short", "{question}\n<think>", "<think>"),
    "r1": Template("r1", "{system}\nUser: {question}\nAssistant: <think>", "<think>"),
    "plain": Template("plain", "{question}\n", ""),
}
DEFAULT_WEIGHTS: Mapping[str, float] = {"accuracy": 1.0, "format": 0.2}
SPLITS = ("train", "test")
MAX_MISSES = 5_000


def resolve_template(template: str | Template) -> Template:
    if isinstance(template, Template):
        return template
    if template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}: choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[template]


def resolve_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The default weights updated with `weights`; only the parts "accuracy" and "format" exist."""
    out = dict(DEFAULT_WEIGHTS)
    for name, value in (weights or {}).items():
        if name not in DEFAULT_WEIGHTS:
            raise ValueError(
                f"unknown reward part {name!r} in weights: the parts are {sorted(DEFAULT_WEIGHTS)}"
            )
        out[name] = float(value)
    return out


class VerifiedTask:
    """A task scored by a verifier: subclasses provide `examples` and `accuracy` (and may override
    `extract` / `equivalent`); rendering, prefix handling and the weighted `Score` live here."""

    name = "task"

    def __init__(
        self,
        *,
        template: str | Template = "short",
        weights: Mapping[str, float] | None = None,
        system_prompt: str = R1_SYSTEM_PROMPT,
    ) -> None:
        self.template = resolve_template(template)
        self.weights = resolve_weights(weights)
        self.system_prompt = system_prompt

    @property
    def prefix(self) -> str:
        """What `render` leaves open for the completion (prepended before grading)."""
        return self.template.prefix

    def examples(self, split: str) -> Sequence[Example]:
        raise NotImplementedError

    def accuracy(self, example: Example, text: str) -> float:
        """1.0 / 0.0 for the *full* completion text (prefix already prepended)."""
        raise NotImplementedError

    def render(self, example: Example) -> str:
        return self.template.text.format(question=example.prompt, system=self.system_prompt)

    def messages(self, example: Example) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": example.prompt},
        ]

    def full_text(self, completion: str, prefix: str | None = None) -> str:
        """The completion as graded: the template prefix (or `prefix`) followed by the model's text."""
        return (self.prefix if prefix is None else prefix) + (
            completion if isinstance(completion, str) else ""
        )

    def score(self, example: Example, completion: str, *, prefix: str | None = None) -> Score:
        """Parts {"accuracy", "format"} (each 0/1) and their weighted sum; never raises on model text."""
        text = self.full_text(completion, prefix)
        parts = {"accuracy": float(self.accuracy(example, text)), "format": think_answer_format(text)}
        return Score.weighted(parts, self.weights)

    def extract(self, completion: str, *, prefix: str | None = None) -> str | None:
        return extract_answer(self.full_text(completion, prefix))

    def equivalent(self, a: str, b: str, example: Example) -> bool:
        return " ".join(a.split()) == " ".join(b.split())

    def layout(self, think: str, answer: str) -> str:
        """The completion a solver emits after `render`: the R1 layout minus the template prefix."""
        full = f"<think>{think}</think><answer>{answer}</answer>"
        return full[len(self.prefix) :] if full.startswith(self.prefix) else full

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, template={self.template.name!r})"


def split_of(key: str, test_fraction: float, salt: str = "rlvr") -> str:
    """ "train" or "test" for a canonical problem key: a hash, independent of seeds and knobs,
    so the same problem never lands in both splits of any two tasks built from the same family."""
    h = int.from_bytes(hashlib.sha256(f"{salt}|{key}".encode()).digest()[:8], "big")
    return "test" if h % 1_000_000 < round(test_fraction * 1_000_000) else "train"


def key_id(prefix: str, key: str) -> str:
    """A stable, content-addressed example id: the same problem has the same id under any seed."""
    return f"{prefix}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


class ProceduralTask(VerifiedTask):
    """A generated task: `sample(rng) -> (canonical key, Example without id)` is drawn until each
    split has its count of distinct problems, keeping only those whose key hashes into the split."""

    def __init__(
        self, *, seed: int = 0, n_train: int = 2000, n_test: int = 200, test_fraction: float = 0.1, **kw: Any
    ):
        super().__init__(**kw)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        self.seed, self.test_fraction = seed, test_fraction
        self.counts = {"train": int(n_train), "test": int(n_test)}
        self._cache: dict[str, list[Example]] = {}

    def sample(self, rng: random.Random) -> tuple[str, Example]:
        raise NotImplementedError

    def examples(self, split: str) -> Sequence[Example]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}: {self.name} has splits {list(SPLITS)}")
        if split not in self._cache:
            self._cache[split] = self._generate(split)
        return self._cache[split]

    def _generate(self, split: str) -> list[Example]:
        rng = random.Random(f"{self.name}|{self.seed}|{split}")
        want, seen, out = self.counts[split], set(), []
        misses = 0  # draws in a row that gave nothing new: the problem space is (nearly) used up
        while len(out) < want and misses < MAX_MISSES:
            key, ex = self.sample(rng)
            if key in seen or split_of(f"{self.name}|{key}", self.test_fraction) != split:
                misses += 1
                continue
            misses = 0
            seen.add(key)
            out.append(Example(id=key_id(self.name, key), prompt=ex.prompt, gold=ex.gold, meta=ex.meta))
        if len(out) < want:
            raise ValueError(
                f"{self.name}: found only {len(out)} distinct {split} problems of the {want} asked for; "
                f"lower n_{split} or make the problems harder (more digits / numbers)"
            )
        return out


TaskFactory = Callable[..., Task]
