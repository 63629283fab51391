"""Sort a short list of distinct integers ascending: an unambiguous task a tiny model can learn.

`Sort: 42 7 19 3` → answer `3 7 19 42`.  The worked trace is selection sort, one line per pick:
`min 42 7 19 3 = 3` / `min 42 7 19 = 7` / `min 42 19 = 19`, the last one left needs no line.  With
`noise > 0` that fraction of traces picks the second-smallest once (a plausible slip), carried
through to a wrong order.  Grading: the answer's integers (separated by spaces and/or commas,
optionally in brackets) must be exactly the sorted list.  The split key is the *set* of numbers,
so no permutation of a test list is ever trained on.
"""

from __future__ import annotations

import random
import re
from typing import Any

from rlvr.errors import TaskKwargError
from rlvr.tasks.base import ProceduralTask
from rlvr.types import Example
from rlvr.verifiers.region import extract_answer

_LIST = re.compile(r"\[?\s*-?\d+(?:\s*[,\s]\s*-?\d+)*\s*\]?")


def parse_list(answer: str | None) -> list[int] | None:
    """`3 7 19`, `3, 7, 19` or `[3, 7, 19]` → [3, 7, 19]; None for anything else."""
    if answer is None or len(answer) > 512:
        return None
    core = answer.strip().rstrip(".").strip()
    if not _LIST.fullmatch(core):
        return None
    return [int(tok) for tok in re.findall(r"-?\d+", core)]


def selection_steps(numbers: list[int], slip_at: int | None = None) -> tuple[list[str], list[int]]:
    """`min … = m` lines and the order they produce; at step `slip_at` the second-smallest is taken."""
    rest, lines, out = list(numbers), [], []
    while len(rest) > 1:
        pick = min(rest)
        if len(out) == slip_at:
            pick = sorted(rest)[1]
        lines.append(f"min {' '.join(map(str, rest))} = {pick}")
        out.append(pick)
        rest.remove(pick)
    return lines, out + rest  # the last one left needs no line


class SortTask(ProceduralTask):
    """Knobs: `length` (list length), `max_value` (numbers drawn from 0..max_value, distinct)."""

    name = "sort"

    def __init__(self, *, length: int = 4, max_value: int = 99, **kw: Any) -> None:
        if length < 2:
            raise TaskKwargError("length", f"sort needs length >= 2 (numbers per problem); got {length}")
        if max_value + 1 < length:
            raise TaskKwargError("max_value", f"sort draws {length} distinct numbers from 0..max_value, so it needs "
                                 f"max_value >= length - 1 = {length - 1}; got {max_value}")  # fmt: skip
        super().__init__(**kw)
        self.length, self.max_value = length, max_value

    def sample(self, rng: random.Random) -> tuple[str, Example]:
        numbers = rng.sample(range(self.max_value + 1), self.length)
        gold = " ".join(map(str, sorted(numbers)))
        prompt = f"Sort: {' '.join(map(str, numbers))}"
        return gold, Example(id="", prompt=prompt, gold=gold, meta={"numbers": numbers})

    def accuracy(self, example: Example, text: str) -> float:
        got = parse_list(extract_answer(text))
        return 1.0 if got is not None and got == sorted(example.meta["numbers"]) else 0.0

    def equivalent(self, a: str, b: str, example: Example) -> bool:
        la, lb = parse_list(a), parse_list(b)
        return la == lb if la is not None and lb is not None else super().equivalent(a, b, example)

    def solution(self, example: Example, rng: random.Random | None = None, noise: float = 0.0) -> str:
        """Selection-sort trace then the sorted list; with probability `noise`, one wrong pick."""
        rng = rng or random.Random(example.id)
        numbers = list(example.meta["numbers"])
        slip = rng.randrange(len(numbers) - 1) if noise > 0 and rng.random() < noise else None
        lines, order = selection_steps(numbers, slip)
        return self.layout("\n".join(lines), " ".join(map(str, order)))
