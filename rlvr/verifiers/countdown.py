"""Countdown verifier: reach `target` from `numbers` with + - * / (TinyZero's game).

Rules (stricter than TinyZero's `eval`, which we never call):
- The answer (`region.extract_answer`) is an arithmetic expression over non-negative integer
  literals, binary `+ - * /` and parentheses.  `×`, `÷`, `·`, `\\times`, `\\div`, `\\cdot` are read as
  `*` and `/`, U+2212 (−) as `-`, `\\left(`/`\\right)` as parentheses.  Anything else rejects the answer: decimals, exponents, `**`, `//`, `%`, letters.
- Every given number is used exactly once (multiset equality, TinyZero's rule).  Literals are
  whole tokens, so digit concatenation (`12` from 1 and 2) is a different multiset and fails.
  Leading zeros (`03`) are rejected.
- No unary minus or plus: the game has binary operations only, and `-(a-b)` style tricks would
  let a model reach targets the numbers cannot.
- Exact rational arithmetic (`fractions.Fraction`); dividing by zero scores 0.
- An answer may end with `= N`: accepted when N is exactly the target written as an integer
  (`(1+2)*3 = 9`), rejected otherwise; only one `=`.
- Bounded work: at most `MAX_EXPR_CHARS` characters, `MAX_DEPTH` nested parentheses, no more
  literals than numbers, literals of at most `MAX_DIGITS` digits.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction

from rlvr.verifiers._mathtext import INVISIBLE
from rlvr.verifiers.region import extract_answer

MAX_EXPR_CHARS = 512
MAX_DEPTH = 32
MAX_DIGITS = 12
_ALIASES = {
    "\u2212": "-",  # U+2212 MINUS SIGN is a minus, as `×` is a times
    "×": "*",
    "÷": "/",
    "·": "*",
    "\\times": "*",
    "\\div": "/",
    "\\cdot": "*",
    "\\left(": "(",
    "\\right)": ")",
}


class _Reject(Exception):
    """The expression breaks a rule; the verifier turns this into 0."""


def _tokens(expr: str, max_literals: int) -> list[str | int]:
    """Integer literals and single-character operators; raises _Reject on anything else."""
    expr = expr.translate(INVISIBLE)  # zero-width and other invisible characters are spaces
    for alias, op in _ALIASES.items():
        expr = expr.replace(alias, op)
    out: list[str | int] = []
    i, n, literals = 0, len(expr), 0
    while i < n:
        ch = expr[i]
        if ch.isspace():
            i += 1
        elif ch in "+-*/()":
            if ch in "*/" and i + 1 < n and expr[i + 1] == ch:
                raise _Reject("** and // are not allowed")
            out.append(ch)
            i += 1
        elif "0" <= ch <= "9":
            j = i
            while j < n and "0" <= expr[j] <= "9":
                j += 1
            digits = expr[i:j]
            literals += 1
            if len(digits) > MAX_DIGITS or (len(digits) > 1 and digits[0] == "0") or literals > max_literals:
                raise _Reject(f"bad literal {digits[:MAX_DIGITS]}")
            out.append(int(digits))
            i = j
        else:
            raise _Reject(f"unexpected character {ch!r}")
    return out


class _Parser:
    """expr := term (('+'|'-') term)* ; term := factor (('*'|'/') factor)* ; factor := INT | '(' expr ')'."""

    def __init__(self, tokens: list[str | int]) -> None:
        self.tokens, self.pos, self.depth, self.literals = tokens, 0, 0, []

    def _peek(self) -> str | int | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def expr(self) -> Fraction:
        value = self.term()
        while self._peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def term(self) -> Fraction:
        value = self.factor()
        while self._peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self.factor()
            if op == "/" and rhs == 0:
                raise _Reject("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def factor(self) -> Fraction:
        tok = self._peek()
        self.pos += 1
        if isinstance(tok, int):
            self.literals.append(tok)
            return Fraction(tok)
        if tok != "(":
            raise _Reject(f"expected a number or '(' but found {tok!r}")  # includes unary minus
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Reject("nesting too deep")
        value = self.expr()
        if self._peek() != ")":
            raise _Reject("unbalanced parentheses")
        self.pos += 1
        self.depth -= 1
        return value


def countdown_value(expr: str, numbers: list[int]) -> Fraction | None:
    """The exact value of `expr` if it is a legal countdown expression over `numbers`, else None."""
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
        return None
    try:
        parser = _Parser(_tokens(expr, max_literals=len(numbers)))
        value = parser.expr()
        if parser.pos != len(parser.tokens):
            return None  # trailing tokens, e.g. "1+2)"
    except (_Reject, RecursionError):
        return None
    if Counter(parser.literals) != Counter(int(n) for n in numbers):
        return None
    return value


def _split_target(answer: str, target: int) -> str | None:
    """The expression part of `answer`, dropping a trailing `= target`; None for any other `=`."""
    if "=" not in answer:
        return answer
    parts = answer.split("=")
    if len(parts) != 2 or parts[1].strip() != str(target):
        return None
    return parts[0]


def verify_countdown(completion: str, numbers: list[int], target: int) -> float:
    """1.0 when the final answer is a legal expression over `numbers` that equals `target`."""
    answer = extract_answer(completion)
    if answer is None:
        return 0.0
    expr = _split_target(answer.strip().rstrip(".").strip().strip("$").strip(), target)
    if expr is None:
        return 0.0
    try:
        value = countdown_value(expr, list(numbers))
        return 1.0 if value is not None and value == Fraction(int(target)) else 0.0
    except (TypeError, ValueError):
        return 0.0  # malformed numbers/target from the caller's data, not model text
