"""The `Task` protocol: a task owns its data, its prompt template and its verifier.

(After nanochat's `tasks/`.)  Tasks are torch-free; the rollout layer renders prompts through
`render` and scores completions through `score`; evaluation votes over `extract` + `equivalent`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from rlvr.types import Example, Score

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
