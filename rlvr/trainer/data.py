"""The data cursor: which examples come next, reproducibly and resumably.

Each epoch visits every example once in an order fixed by (seed, epoch); the cursor's state is
two integers, so a checkpoint stores it exactly and a resumed run draws the same prompts.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

from rlvr.config import ConfigError
from rlvr.tasks.files import DatasetError, read_jsonl, read_parquet

T = TypeVar("T")


def tokenize_prompt(tokenizer: Any, text: str) -> list[int]:
    """A prompt read from a file, tokenised as `rlvr.rollout.collect` tokenises it: with the tokenizer's special
    tokens, unless the text already starts with its BOS (rendered through a chat template, e.g. rows of
    `rlvr distill collect --chat-template`): then as it is, not with a second BOS."""
    bos = getattr(tokenizer, "bos_token", None)
    rendered = bool(bos) and text.startswith(bos)
    return list(tokenizer(text, add_special_tokens=not rendered)["input_ids"])


def read_text_rows(path: str | Path, fields: Mapping[str, str], *, what: str) -> list[tuple[str, ...]]:
    """The string values of `fields` (config key -> field name, e.g. {"prompt_field": "q"}) of each row of
    a JSONL (or .parquet) file, in that order.  A bad row raises DatasetError naming `file:line`, the field and the
    `data.<key>` to set; a file with no rows says the data is empty."""
    rows = []
    path = Path(path)
    for loc, row in read_parquet(path) if path.suffix == ".parquet" else read_jsonl(path):
        if isinstance(row, DatasetError):
            raise row
        for key, name in fields.items():
            if not isinstance(row, dict) or not isinstance(row.get(name), str):
                raise DatasetError(f"{loc}: field {name!r} missing or not a string (set data.{key})")
        rows.append(tuple(row[name] for name in fields.values()))
    if not rows:
        raise DatasetError(f"{path}: the file holds no {what} rows, so the data is empty")
    return rows


class DataCursor(Generic[T]):
    def __init__(self, items: Sequence[T], seed: int, *, shuffle: bool = True) -> None:
        if not items:
            raise ConfigError("the data is empty (no examples to train on): check the task's train split / the data file")
        self.items, self.seed, self.shuffle = items, seed, shuffle
        self.epoch, self.position = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        order = list(range(len(self.items)))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + self.epoch).shuffle(order)
        return order

    def take(self, n: int, *, step: int = 0, attempt: int = 0) -> list[T]:
        """The next `n` items, wrapping into a new (re-shuffled) epoch as needed (`step` and
        `attempt` are for `MixtureCursor`'s interface; the order here depends only on the position)."""
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


class MixtureCursor(Generic[T]):
    """Draws each item's source by weight, then the next item of that source's own `DataCursor`.

    The draw for step s is a pure function of (seed, s, attempt), so resuming needs only the member
    cursors' positions; `take(n, step=, attempt=)` is what the RL loop calls.
    """

    def __init__(self, sources: Sequence[Sequence[T]], weights: Sequence[float], seed: int) -> None:
        self.cursors = [DataCursor(items, seed + 7919 * i) for i, items in enumerate(sources)]
        self.weights, self.seed = list(weights), seed

    def take(self, n: int, *, step: int = 0, attempt: int = 0) -> list[T]:
        rng = random.Random(f"mixture|{self.seed}|{step}|{attempt}")
        picks = rng.choices(range(len(self.cursors)), weights=self.weights, k=n)
        return [self.cursors[i].take(1)[0] for i in picks]

    @property
    def epoch(self) -> int:
        return min(c.epoch for c in self.cursors)

    def state_dict(self) -> dict[str, list[dict[str, int]]]:
        return {"members": [c.state_dict() for c in self.cursors]}

    def load_state_dict(self, state: dict[str, list[dict[str, int]]]) -> None:
        if len(state["members"]) != len(self.cursors):
            raise ValueError(
                f"checkpoint's mixture has {len(state['members'])} tasks but this run has {len(self.cursors)}: "
                "resume with the [[tasks]] the run started with"
            )
        for c, s in zip(self.cursors, state["members"]):
            c.load_state_dict(s)
