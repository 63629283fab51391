"""Countdown (TinyZero's game): combine every given number once with + - * / to reach the target.

Solvability is guaranteed by construction: a problem is drawn by combining the numbers pairwise in
random order with random operations (exact division only, no negative or zero intermediates), so
the last value is the target and the combination steps are a solution.  `solution()` writes those
steps as the trace (`3+5=8` / `8*4=32` / `32-6=26`) and the expression as the answer
(`(3+5)*4-6`).  With `noise > 0`, that fraction of traces makes one plausible mistake whose
arithmetic is then carried through honestly: a different operation at one step, or a misread
number (off by one), so the final answer misses the target or uses a number not given.
Grading is `rlvr.verifiers.countdown.verify_countdown` (every number exactly once, exact fractions).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from rlvr.errors import TaskKwargError
from rlvr.tasks.base import ProceduralTask
from rlvr.types import Example
from rlvr.verifiers.countdown import countdown_value, verify_countdown

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


@dataclass(frozen=True)
class Node:
    """An expression over the given numbers: a leaf (`op` is None) or `left op right`."""

    value: Fraction
    op: str | None = None
    left: Node | None = None
    right: Node | None = None

    def text(self) -> str:
        """Infix with only the parentheses precedence needs."""
        if self.op is None:
            return str(self.value)
        left, right = self.left.text(), self.right.text()
        if self.left.op and _PREC[self.left.op] < _PREC[self.op]:
            left = f"({left})"
        if self.right.op and (
            _PREC[self.right.op] < _PREC[self.op]
            or (_PREC[self.right.op] == _PREC[self.op] and self.op in "-/")
        ):
            right = f"({right})"
        return f"{left}{self.op}{right}"


def apply(op: str, a: Fraction, b: Fraction) -> Fraction | None:
    """a op b, or None when the game forbids it (division by zero)."""
    if op == "/":
        return None if b == 0 else a / b
    return a + b if op == "+" else a - b if op == "-" else a * b


def combine(rng: random.Random, pool: list[Node]) -> Node:
    """Combine the pool pairwise at random into one Node (its value is the target).

    Allowed steps keep every intermediate a positive integer: subtraction larger minus smaller
    (not equal), division only when exact and not by 1 (a no-op that teaches nothing).
    """
    pool = list(pool)
    while len(pool) > 1:
        a, b = rng.sample(pool, 2)
        options = ["+", "*"]
        if a.value > b.value:
            options.append("-")
        if b.value > 1 and a.value % b.value == 0:
            options.append("/")
        op = rng.choice(options)
        node = Node(apply(op, a.value, b.value), op, a, b)
        pool = [n for n in pool if n is not a and n is not b] + [node]
    return pool[0]


def steps_of(node: Node) -> list[str]:
    """`a op b=v` lines, post-order (operands first), as a person would work the expression."""
    if node.op is None:
        return []
    return [
        *steps_of(node.left),
        *steps_of(node.right),
        f"{node.left.value}{node.op}{node.right.value}={node.value}",
    ]


class CountdownTask(ProceduralTask):
    """Knobs: `n_numbers` (3-4), `max_number` (largest given number), `target_min`/`target_max`;
    `failed_attempts`: up to that many wrong tries (`15+6+8=29 no`) precede the worked solution."""

    name = "countdown"

    def __init__(
        self,
        *,
        n_numbers: int = 3,
        max_number: int = 20,
        target_min: int = 1,
        target_max: int = 100,
        failed_attempts: int = 0,
        **kw: Any,
    ) -> None:
        for name, value, ok, need in (
            ("n_numbers", n_numbers, 2 <= n_numbers <= 6, "2 <= n_numbers <= 6"),
            ("max_number", max_number, max_number >= 2, "max_number >= 2"),
            ("target_min", target_min, target_min >= 1, "target_min >= 1"),
            ("target_max", target_max, target_max >= target_min, f"target_max >= target_min = {target_min}"),
            ("failed_attempts", failed_attempts, failed_attempts >= 0, "failed_attempts >= 0"),
        ):
            if not ok:
                raise TaskKwargError(name, f"countdown needs {need}; got {value}")
        super().__init__(**kw)
        self.n_numbers, self.max_number = n_numbers, max_number
        self.target_min, self.target_max = target_min, target_max
        self.failed_attempts = failed_attempts

    def sample(self, rng: random.Random) -> tuple[str, Example]:
        for _ in range(10_000):
            numbers = [rng.randint(1, self.max_number) for _ in range(self.n_numbers)]
            root = combine(rng, [Node(Fraction(n)) for n in numbers])
            t = root.value
            if t.denominator == 1 and self.target_min <= t <= self.target_max:
                break
        else:
            raise ValueError(f"countdown: no target in {self.target_min}..{self.target_max}; widen the range")
        target = int(t)
        key = f"{sorted(numbers)}->{target}"
        meta = {"numbers": numbers, "target": target, "solution": root.text()}
        prompt = f"Use {', '.join(map(str, numbers))} to make {target}."
        return key, Example(id="", prompt=prompt, gold=str(target), meta=meta)

    def accuracy(self, example: Example, text: str) -> float:
        return verify_countdown(text, list(example.meta["numbers"]), int(example.meta["target"]))

    def equivalent(self, a: str, b: str, example: Example) -> bool:
        """Two answers are the same when both are legal and reach the same value (any expression)."""
        nums = list(example.meta["numbers"])
        va, vb = countdown_value(a.split("=")[0], nums), countdown_value(b.split("=")[0], nums)
        if va is None or vb is None:
            return super().equivalent(a, b, example)
        return va == vb

    def solution(self, example: Example, rng: random.Random | None = None, noise: float = 0.0) -> str:
        """Steps then the expression; with probability `noise`, one carried-through mistake."""
        rng = rng or random.Random(example.id)
        root, target = self._tree(example), Fraction(int(example.meta["target"]))
        tries = []
        for _ in range(rng.randint(0, self.failed_attempts)):
            guess = combine(rng, [Node(Fraction(n)) for n in example.meta["numbers"]])
            if guess.value != target:
                tries.append(f"{guess.text()}={guess.value} no")
        if noise > 0 and rng.random() < noise:
            root = self._mistake(rng, root, target)
        return self.layout("\n".join([*tries, *steps_of(root)]), root.text())

    def _tree(self, example: Example) -> Node:
        """Parse the stored solution expression back into a Node (the verifier's own grammar)."""
        return _parse(example.meta["solution"])

    @staticmethod
    def _mistake(rng: random.Random, root: Node, target: Fraction) -> Node:
        inner = _nodes(root, leaves=False)
        leaves = _nodes(root, leaves=True)
        for _ in range(16):
            if rng.random() < 0.5:
                victim = rng.choice(inner)
                op = rng.choice([o for o in "+-*/" if o != victim.op])
                value = apply(op, victim.left.value, victim.right.value)
                if value is None or value <= 0 or value.denominator != 1:
                    continue
                swapped = Node(value, op, victim.left, victim.right)
            else:
                victim = rng.choice(leaves)
                swapped = Node(victim.value + rng.choice((-1, 1)))
                if swapped.value <= 0:
                    continue
            new = _replace(root, victim, swapped)
            if new is not None and (new.value != target or swapped.op is None):
                return new
        return root


def _nodes(node: Node, *, leaves: bool) -> list[Node]:
    if node.op is None:
        return [node] if leaves else []
    own = [] if leaves else [node]
    return own + _nodes(node.left, leaves=leaves) + _nodes(node.right, leaves=leaves)


def _replace(node: Node, old: Node, new: Node) -> Node | None:
    """`node` with `old` (by identity) replaced by `new`, values recomputed; None on division by 0."""
    if node is old:
        return new
    if node.op is None:
        return node
    left, right = _replace(node.left, old, new), _replace(node.right, old, new)
    if left is None or right is None:
        return None
    value = apply(node.op, left.value, right.value)
    return None if value is None else Node(value, node.op, left, right)


def _parse(expr: str) -> Node:
    """Parse `(3+5)*4-6` into a Node (trusted text: our own generator wrote it)."""
    toks = [c for c in expr.replace(" ", "")]
    merged: list[str] = []
    for c in toks:
        if c.isdigit() and merged and merged[-1].isdigit():
            merged[-1] += c
        else:
            merged.append(c)
    pos = 0

    def expr_() -> Node:
        nonlocal pos
        node = term()
        while pos < len(merged) and merged[pos] in "+-":
            op = merged[pos]
            pos += 1
            rhs = term()
            node = Node(apply(op, node.value, rhs.value), op, node, rhs)
        return node

    def term() -> Node:
        nonlocal pos
        node = factor()
        while pos < len(merged) and merged[pos] in "*/":
            op = merged[pos]
            pos += 1
            rhs = factor()
            node = Node(apply(op, node.value, rhs.value), op, node, rhs)
        return node

    def factor() -> Node:
        nonlocal pos
        tok = merged[pos]
        pos += 1
        if tok == "(":
            node = expr_()
            pos += 1  # ")"
            return node
        return Node(Fraction(int(tok)))

    return expr_()
