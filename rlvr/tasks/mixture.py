"""A weighted mixture of tasks that looks like one task (Tulu 3 mixes its RL prompts this way).

Each member's examples get ids prefixed by the member's name (`"countdown/cd-3fa2…"`), so ids stay
unique across members; rendering, grading, extraction and voting go to the member that owns the
example.  Sampling by weight is the trainer's (`rlvr.trainer.data.MixtureCursor`): this class only
dispatches.  Member names must be distinct: the same task twice with other kwargs gets `name#2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rlvr.tasks.base import extract as grade_extract
from rlvr.tasks.base import grade
from rlvr.types import Example, Score


class TaskMixture:
    """Tasks with sampling weights; `examples(split)` is the members' examples, member by member."""

    def __init__(self, tasks: Sequence[Any], weights: Sequence[float]) -> None:
        if not tasks or len(tasks) != len(weights) or any(w <= 0 for w in weights):
            raise ValueError("TaskMixture needs one positive weight per task")
        self.tasks, self.weights = list(tasks), [float(w) for w in weights]
        names: list[str] = []
        for t in self.tasks:
            base, k = t.name, 2
            while (name := base if base not in names else f"{base}#{k}") in names:
                k += 1
            names.append(name)
        self.names = names
        self.name = "+".join(names)
        self._owner: dict[str, tuple[Any, Example]] = {}
        self._cache: dict[str, list[list[Example]]] = {}

    def member_examples(self, split: str) -> list[list[Example]]:
        """Each member's examples (ids prefixed), in member order."""
        if split not in self._cache:
            out = []
            for name, task in zip(self.names, self.tasks):
                rows = []
                for ex in task.examples(split):
                    wrapped = Example(id=f"{name}/{ex.id}", prompt=ex.prompt, gold=ex.gold, meta=ex.meta)
                    self._owner[wrapped.id] = (task, ex)
                    rows.append(wrapped)
                out.append(rows)
            self._cache[split] = out
        return self._cache[split]

    def examples(self, split: str) -> Sequence[Example]:
        return [ex for rows in self.member_examples(split) for ex in rows]

    def _member(self, example: Example) -> tuple[Any, Example]:
        if example.id not in self._owner:
            for split in ("train", "test"):
                self.member_examples(split)
        try:
            return self._owner[example.id]
        except KeyError:
            raise KeyError(f"example {example.id!r} belongs to no task of the mixture {self.name}") from None

    def render(self, example: Example) -> str:
        task, ex = self._member(example)
        return task.render(ex)

    def messages(self, example: Example) -> list[dict[str, str]]:
        task, ex = self._member(example)
        return task.messages(ex)

    def score(self, example: Example, completion: str, *, prefix: str | None = None) -> Score:
        task, ex = self._member(example)
        return task.score(ex, completion) if prefix is None else grade(task, ex, completion, prefix=prefix)

    def extract(self, completion: str, *, prefix: str | None = None) -> str | None:
        """Answer extraction (maj@k votes) as the first member does it: the protocol's `extract` sees no
        example, so a mixture whose members extract differently should be evaluated member by member."""
        task = self.tasks[0]
        return task.extract(completion) if prefix is None else grade_extract(task, completion, prefix=prefix)

    def equivalent(self, a: str, b: str, example: Example) -> bool:
        task, ex = self._member(example)
        return task.equivalent(a, b, ex)

    def solution(self, example: Example, *args: Any, **kw: Any) -> str:
        task, ex = self._member(example)
        return task.solution(ex, *args, **kw)
