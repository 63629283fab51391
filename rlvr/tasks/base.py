"""The `Task` protocol: a task owns its data, its prompt template and its verifier.

(After nanochat's `tasks/`.)  Tasks are torch-free; the rollout layer renders prompts through
`render` / `messages` and grades completions through `grade` / `extract` (below); evaluation
votes over `extract` + `equivalent`.

The open prefix.  A rendered prompt may end inside the R1 layout: the "short" and "r1" templates
end with `<think>`, and some chat templates (Qwen3's) end their generation prompt with
`"<think>\\n"`.  The model's completion then starts *inside* the think block, and it is graded as it
reads after the prompt: `open_prefix(prompt_text)` is the part of the layout the prompt leaves open,
and `grade` / `extract` prepend it before checking the format or locating the answer.  It is derived
from the rendered text itself, so plain and chat prompts agree by construction; the training,
evaluation, SFT and `rlvr verify` paths all go through these functions.  `sft_target` is the text
the model must emit after such a prompt: the full `<think>…</think><answer>…</answer>` layout
minus what the prefix opened.  (`VerifiedTask.prefix`, the plain template's prefix, is what
`open_prefix(task.render(example))` returns.)
"""

from __future__ import annotations

import hashlib
import inspect
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from rlvr.errors import TaskKwargError
from rlvr.types import Example, Score
from rlvr.verifiers.format import think_answer_format
from rlvr.verifiers.region import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, extract_answer

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


def open_prefix(prompt_text: str) -> str:
    """The part of the R1 layout a rendered prompt leaves open ("" when it ends outside any tag).

    The prompt counts as ending inside the layout only when, trailing whitespace aside, it ends
    with a tag: `<think>` (think open: "…<think>" gives "<think>", "…<think>\\n" gives
    "<think>\\n"), `</think>` (think closed, answer not yet opened: the prefix starts at that
    block's `<think>`, e.g. Qwen3's "<think>\\n\\n</think>\\n\\n"), or `<answer>` (the prefix starts
    at the think block right before it, or at the `<answer>`).  Tags mentioned earlier in the
    prompt (the R1 system prompt spells out the whole layout) do not count, and neither does
    reasoning prefilled after an opening tag.  The prefix keeps its whitespace, exactly as the
    model sees it, so `prefix + completion` is the text the model wrote after the layout began.
    """
    if not isinstance(prompt_text, str):
        return ""
    body = prompt_text.rstrip()
    if body.endswith(THINK_OPEN):
        start = len(body) - len(THINK_OPEN)
    elif body.endswith(ANSWER_OPEN):
        at = len(body) - len(ANSWER_OPEN)
        think = _closed_think_start(body[:at])
        start = at if think is None else think
    elif (think := _closed_think_start(body)) is not None:
        start = think
    else:
        return ""
    return prompt_text[start:]


def _closed_think_start(head: str) -> int | None:
    """Where the think block that `head` ends with (trailing whitespace aside) starts, or None."""
    head = head.rstrip()
    if not head.endswith(THINK_CLOSE):
        return None
    close = len(head) - len(THINK_CLOSE)
    opening = head.rfind(THINK_OPEN, 0, close)
    return close if opening < 0 else opening


def _last_tag(prefix: str) -> str | None:
    """The last of the four R1 tags in `prefix` (None when it has none): what the prefix left open."""
    found = {tag: prefix.rfind(tag) for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)}
    tag, at = max(found.items(), key=lambda kv: kv[1])
    return tag if at >= 0 else None


def continue_layout(think: str, answer: str, prefix: str) -> str:
    """`<think>{think}</think><answer>{answer}</answer>` minus the part `prefix` already opened.

    After an open `<think>` the continuation is the reasoning onwards; after a closed think block
    it is the answer block (the prompt's own reasoning stands); after `<answer>`, the answer.
    """
    tag = _last_tag(prefix)
    if tag == THINK_OPEN:
        return f"{think}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
    if tag == THINK_CLOSE:
        return f"{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
    if tag == ANSWER_OPEN:
        return f"{answer}{ANSWER_CLOSE}"
    return f"{THINK_OPEN}{think}{THINK_CLOSE}{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"


def split_layout(full: str) -> tuple[str, str]:
    """(think, answer) of a full `<think>…</think><answer>…</answer>` text; ValueError otherwise."""
    t0, t1 = full.find(THINK_OPEN), full.find(THINK_CLOSE)
    a0, a1 = full.find(ANSWER_OPEN), full.rfind(ANSWER_CLOSE)
    if not 0 <= t0 < t1 < a0 < a1:
        raise ValueError(f"not an R1 layout <think>…</think><answer>…</answer>: {full[:80]!r}")
    return full[t0 + len(THINK_OPEN) : t1], full[a0 + len(ANSWER_OPEN) : a1]


def sft_target(
    task: Any, example: Example, prefix: str, rng: random.Random | None = None, noise: float = 0.0
) -> str:
    """What the model must emit after a prompt that left `prefix` open (`Rendered.prefix`): the
    task's worked solution as the full R1 layout, minus the part `prefix` opened.

    Works for any task with `solution(example, rng, noise)` (the text after its *plain* prompt,
    `task.render(example)`); with the plain prompt's own prefix it returns that solution unchanged.
    """
    solve = getattr(task, "solution", None)
    if solve is None:
        raise ValueError(f"task {task.name!r} has no solution(): it cannot make SFT targets; use data.path")
    full = open_prefix(task.render(example)) + solve(example, rng, noise)
    try:
        think, answer = split_layout(full)
    except ValueError as err:
        raise ValueError(f"task {task.name!r}: solution for example {example.id!r} is {err}") from None
    return continue_layout(think, answer, prefix)


def grade(task: Task, example: Example, completion: str, *, prefix: str) -> Score:
    """The reward of `completion` written after a prompt that left `prefix` open.

    Every path (training's `collect`, `evaluate`, `rlvr verify`) grades through here.  A task whose
    `score` takes `prefix=` (every `VerifiedTask`) prepends it; a task that implements only the
    protocol's `score(example, completion)` gets the completion as is and owns any prefix itself.
    """
    if _takes_prefix(task.score):
        return task.score(example, completion, prefix=prefix)  # type: ignore[call-arg]
    return task.score(example, completion)


def extract(task: Task, completion: str, *, prefix: str) -> str | None:
    """The answer `grade` would check (for maj@k votes): `task.extract` with `prefix`, as `grade`."""
    if _takes_prefix(task.extract):
        return task.extract(completion, prefix=prefix)  # type: ignore[call-arg]
    return task.extract(completion)


def _takes_prefix(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "prefix" or p.kind is p.VAR_KEYWORD for p in params)


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
        raise TaskKwargError("template", f"unknown template {template!r}: choose one of {sorted(TEMPLATES)}")
    return TEMPLATES[template]


def resolve_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """The default weights updated with `weights`; only the parts "accuracy" and "format" exist."""
    out = dict(DEFAULT_WEIGHTS)
    for name, value in (weights or {}).items():
        if name not in DEFAULT_WEIGHTS:
            raise TaskKwargError(
                "weights", f"unknown reward part {name!r} in weights: the parts are {sorted(DEFAULT_WEIGHTS)}"
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
        """The completion as graded: `prefix` (default: the plain template's) then the model's text."""
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
        return continue_layout(think, answer, self.prefix)

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
            raise TaskKwargError("test_fraction", f"test_fraction must be in (0, 1), got {test_fraction}")
        for name, count in (("n_train", n_train), ("n_test", n_test)):
            if count < 0:
                raise TaskKwargError(name, f"{name} is a number of problems, >= 0; got {count}")
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
