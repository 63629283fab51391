"""Multi-digit integer arithmetic (+, -, *) with worked column traces a tiny model can imitate.

A problem is `t0 op t1 op t2 …` with operands of up to `digits` digits, evaluated with the usual
precedence (* first, then + and - left to right); problems whose intermediate values go negative
are not drawn.  `solution()` writes each binary operation as schoolbook column steps, rightmost
column first, carries (or borrows) made explicit: `47+85` → `7+5=12 4+8+1=13` → answer `132`.
With `noise > 0` that fraction of traces contains one plausible slip (a forgotten or spurious
carry/borrow, or a column result off by one) that propagates honestly to a wrong final answer.
Grading is exact integer comparison (no math parser needed for integers).
"""

from __future__ import annotations

import random
import re
from typing import Any

from rlvr.errors import TaskKwargError
from rlvr.tasks.base import ProceduralTask
from rlvr.types import Example
from rlvr.verifiers.region import extract_answer

OPS = "+-*"
_INT = re.compile(r"[+-]?\d+|[+-]?\d{1,3}(,\d{3})+")
Slip = tuple[int, str]  # (column, "carry" | "digit")


def parse_int(answer: str | None) -> int | None:
    """The integer an answer states (`132`, `-7`, `1,320`, `132.` ), or None for anything else."""
    if answer is None:
        return None
    core = answer.strip().rstrip(".").strip().strip("$").strip()
    if len(core) > 64 or not _INT.fullmatch(core):
        return None
    return int(core.replace(",", ""))


def _digits(n: int, width: int) -> list[int]:
    """Digits of `n` (>= 0), least significant first, zero-padded to `width`."""
    return [(n // 10**i) % 10 for i in range(width)]


def _flip(slip: Slip | None, col: int, kind: str) -> bool:
    return slip is not None and slip == (col, kind)


def _nudge(value: int, lo: int, hi: int) -> int:
    """`value` off by one, staying within [lo, hi] (a plausible miscount)."""
    return value + 1 if value + 1 <= hi else value - 1 if value - 1 >= lo else value


def column_add(a: int, b: int, slip: Slip | None = None) -> tuple[list[str], int]:
    """`7+5=12 4+8+1=13`: each column's digits plus the carry in; the value the columns state."""
    width, steps, carry, value = max(len(str(a)), len(str(b))), [], 0, 0
    for i, (da, db) in enumerate(zip(_digits(a, width), _digits(b, width))):
        if _flip(slip, i, "carry"):
            carry = 1 - carry
        s = da + db + carry
        if _flip(slip, i, "digit"):
            s = _nudge(s, 0, 19)
        steps.append(f"{da}+{db}" + (f"+{carry}" if carry else "") + f"={s}")
        value += (s % 10) * 10**i
        carry = s // 10
    return steps, value + carry * 10**width


def column_sub(a: int, b: int, slip: Slip | None = None) -> tuple[list[str], int]:
    """`12-7=5 4-1=3` for 52-17: the column digit after the borrow out, borrowing 10 when short."""
    width, steps, borrow, value = len(str(a)), [], 0, 0
    for i, (da, db) in enumerate(zip(_digits(a, width), _digits(b, width))):
        if _flip(slip, i, "carry"):
            borrow = 1 - borrow
        x, borrow = da - borrow, 0
        if x < db:
            x, borrow = x + 10, 1
        r = x - db
        if _flip(slip, i, "digit"):
            r = _nudge(r, 0, 9)
        steps.append(f"{x}-{db}={r}")
        value += r * 10**i
    return steps, value - borrow * 10**width


def column_mul(a: int, b: int, slip: Slip | None = None) -> tuple[list[str], int]:
    """By one digit: `7*5=35 4*5+3=23` (carry made explicit); by more: partial products, then their sum."""
    if b >= 10:
        partials, steps = [], []
        for j, d in enumerate(_digits(b, len(str(b)))):
            p = a * d
            if _flip(slip, j, "digit") or _flip(slip, j, "carry"):
                p = p + 1 if p % 10 < 9 else p - 1
            steps.append(f"{a}*{d}={p}")
            partials.append(p * 10**j)
        total = sum(partials)
        return [*steps, "+".join(map(str, partials)) + f"={total}"], total
    width, steps, carry, value = len(str(a)), [], 0, 0
    for i, da in enumerate(_digits(a, width)):
        if _flip(slip, i, "carry"):
            carry = carry + 1 if carry == 0 else carry - 1
        p = da * b + carry
        if _flip(slip, i, "digit"):
            p = _nudge(p, 0, 89)
        steps.append(f"{da}*{b}" + (f"+{carry}" if carry else "") + f"={p}")
        value += (p % 10) * 10**i
        carry = p // 10
    return steps, value + carry * 10**width


def binary_step(a: int, op: str, b: int, slip: Slip | None = None) -> tuple[list[str], int]:
    """Worked steps of one operation; negative operands (only after a slip) get a one-line step."""
    if a < 0 or b < 0 or (op == "-" and a < b):
        value = a + b if op == "+" else a - b if op == "-" else a * b
        return [f"{a}{op}{b}={value}"], value
    return {"+": column_add, "-": column_sub, "*": column_mul}[op](a, b, slip)


def evaluation_order(terms: list[int], ops: list[str]) -> list[tuple[int, int, str]]:
    """(left slot, right slot, op) in the order precedence evaluates them: * first, then left to right."""
    order = [(i, i + 1, op) for i, op in enumerate(ops) if op == "*"]
    order += [(i, i + 1, op) for i, op in enumerate(ops) if op != "*"]
    return order


def _fold(terms: list[int], ops: list[str], step: Any) -> int:
    """Evaluate with precedence, calling `step(k, a, op, b) -> value` for the k-th operation."""
    vals, owner = list(terms), list(range(len(terms)))  # owner: slot -> slot holding its merged value
    for k, (i, j, op) in enumerate(evaluation_order(terms, ops)):
        li, rj = owner[i], owner[j]
        vals[li] = step(k, vals[li], op, vals[rj])
        owner = [li if o == rj else o for o in owner]
    return vals[owner[0]]


def work(
    terms: list[int], ops: list[str], slip_at: int | None = None, slip: Slip | None = None
) -> tuple[list[str], int]:
    """One trace line per operation (headed `a+b:` when there are several); `slip` hits operation `slip_at`."""
    lines: list[str] = []

    def step(k: int, a: int, op: str, b: int) -> int:
        steps, value = binary_step(a, op, b, slip if k == slip_at else None)
        lines.append(" ".join(steps) if len(ops) == 1 else f"{a}{op}{b}: {' '.join(steps)} ={value}")
        return value

    return lines, _fold(terms, ops, step)


def intermediates(terms: list[int], ops: list[str]) -> list[int]:
    """Every value the trace shows, in order (exact arithmetic, no slips)."""
    out: list[int] = []

    def step(k: int, a: int, op: str, b: int) -> int:
        out.append(a + b if op == "+" else a - b if op == "-" else a * b)
        return out[-1]

    _fold(terms, ops, step)
    return out


class ArithmeticTask(ProceduralTask):
    """Integer arithmetic; knobs: `digits` (max digits per operand), `ops` (subset of "+-*"), `n_terms`."""

    name = "arithmetic"

    def __init__(self, *, digits: int = 2, ops: str = "+", n_terms: int = 2, **kw: Any) -> None:
        for name, value, least in (("digits", digits, 1), ("n_terms", n_terms, 2)):
            if value < least:
                raise TaskKwargError(name, f"arithmetic needs {name} >= {least}; got {value}")
        if not ops or set(ops) - set(OPS):
            raise TaskKwargError("ops", f"arithmetic needs ops from {OPS!r} (e.g. \"+-\"); got {ops!r}")
        super().__init__(**kw)
        self.digits, self.ops, self.n_terms = digits, "".join(dict.fromkeys(ops)), n_terms

    def sample(self, rng: random.Random) -> tuple[str, Example]:
        while True:
            terms = [rng.randrange(10**self.digits) for _ in range(self.n_terms)]
            ops = [rng.choice(self.ops) for _ in range(self.n_terms - 1)]
            if all(v >= 0 for v in intermediates(terms, ops)):
                break
        expr = "".join(f"{t}{op}" for t, op in zip(terms, [*ops, ""]))
        key = expr
        if len(set(ops)) == 1 and ops[0] in "+*":  # commutative: 3+5 and 5+3 are one problem
            key = ops[0].join(map(str, sorted(terms)))
        meta = {"terms": terms, "ops": ops}
        return key, Example(id="", prompt=expr, gold=str(work(terms, ops)[1]), meta=meta)

    def accuracy(self, example: Example, text: str) -> float:
        value = parse_int(extract_answer(text))
        return 1.0 if value is not None and str(value) == example.gold else 0.0

    def equivalent(self, a: str, b: str, example: Example) -> bool:
        va, vb = parse_int(a), parse_int(b)
        return va == vb if va is not None and vb is not None else super().equivalent(a, b, example)

    def solution(self, example: Example, rng: random.Random | None = None, noise: float = 0.0) -> str:
        """The worked trace after `render(example)`; with probability `noise`, one slip (a wrong answer)."""
        rng = rng or random.Random(example.id)
        terms, ops = list(example.meta["terms"]), list(example.meta["ops"])
        lines, value = work(terms, ops)
        if noise > 0 and rng.random() < noise:
            for _ in range(8):  # a slip can cancel out (e.g. times 0); try another
                k = rng.randrange(len(ops))
                width = max(len(str(t)) for t in terms) + 1
                slip = (rng.randrange(width), rng.choice(("carry", "digit")))
                bad_lines, bad = work(terms, ops, k, slip)
                if bad != value:
                    lines, value = bad_lines, bad
                    break
        return self.layout("\n".join(lines), str(value))
