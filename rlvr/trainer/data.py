"""The data cursor: which examples come next, reproducibly and resumably.

Each epoch visits every example once in an order fixed by (seed, epoch); the cursor's state is
two integers, so a checkpoint stores it exactly and a resumed run draws the same prompts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class DataCursor(Generic[T]):
    def __init__(self, items: Sequence[T], seed: int, *, shuffle: bool = True) -> None:
        if not items:
            raise ValueError("the data cursor got no examples: check the task's train split / the data file")
        self.items, self.seed, self.shuffle = items, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        order = list(range(len(self.items)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int) -> list[T]:
        """The next `n` items, wrapping into a new (re-shuffled) epoch as needed."""
        out = []
        for _ in range(n):
            if self.position == len(self._order):
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._make_order()
            out.append(self.items[self._order[self.position]])
            self.position += 1
        return out

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position, "size": len(self.items)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("size", len(self.items)) != len(self.items):
            raise ValueError(
                f"checkpoint's data cursor covers {state['size']} examples but this run has {len(self.items)}: "
                "resume with the same task / data settings the run started with"
            )
        self.epoch, self.position = state["epoch"], state["position"]
        self._order = self._make_order()
