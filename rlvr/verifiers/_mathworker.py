"""Child-process side of `rlvr.verifiers.math`: math-verify parsing and comparison.

Runs as `python -m rlvr.verifiers._mathworker` under `DeadlineWorker` (see `_deadline` for the
line protocol); the parent never imports sympy.  The functions are plain and importable so
tests can call them in-process.  Inside the child a soft per-item deadline (SIGALRM, this is
the child's main thread) stops Python-level slowness cheaply; the parent's hard deadline
(kill + restart) covers what a signal cannot interrupt (C-level bignum work, crashes).

Policy beyond math-verify (documented in `rlvr.verifiers.math`): hedges score 0 against a
single-valued gold — disjunction words/symbols, unpaired `|`, `\\\\` or `&` outside a matrix, an
ellipsis followed by more candidates, a set/tuple/interval of several values, and `=`/arrow
chains whose constant sides disagree with the gold (`4 = 3`, `3 \\to 4`; math-verify alone would
grade the last side).  Answers with unbalanced braces score 0 (they could escape our wrapper).
"""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
from functools import lru_cache
from typing import Any

from rlvr.verifiers import _lifeline, _mathchars, _mathtext
from rlvr.verifiers._mathtext import braces_balanced

MEMORY_LIMIT_BYTES = 4 << 30  # a bignum bomb hits MemoryError instead of swapping the host
MAX_EQUATION_SIDES = 6
MAX_GRADED_CHARS = 1_000  # the graded part of an answer block (`math.MAX_ANSWER_CHARS` caps the block)

_DISJUNCTION = re.compile(r"\\lor\b|\\vee\b|\\mid\b|\\land\b|\\wedge\b|\bor\b|\band\b|;")
_ELLIPSIS_THEN_MORE = re.compile(r"(?:\.\.\.|…|\\[lc]?dots\b)[\s,;]*[^\s,;.}$]")
# sides of a chain: `=` (not `<=`, `>=`, `!=`, `==`) and arrows (`5 \to 6` reads as "5, no: 6")
_CHAIN = re.compile(
    r"(?<![<>!:=])=(?!=)|\\(?:approx|to|mapsto|implies|iff|[lL]ongrightarrow|[rR]ightarrow)(?![a-zA-Z])"
)
_PREFIX = re.compile(r"^(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)?\s*", re.IGNORECASE)
_ANSWER_CUE = re.compile(r"\banswer\s+is\b|\banswer\s*:", re.IGNORECASE)


class SoftTimeout(BaseException):
    """Raised by SIGALRM; a BaseException so math-verify's `except Exception` cannot swallow it."""


def normalize(text: str) -> str:
    """Strip the wrappers models put around an answer: `$…$`, `\\(…\\)`, "Answer:", a final period."""
    s = _PREFIX.sub("", text.strip())
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
            s = s[len(left) : len(s) - len(right)].strip()
    return s.rstrip(".").strip()


@lru_cache(maxsize=8192)
def parse_math(text: str) -> tuple[Any, ...]:
    """math-verify's parse of `text` as one boxed LaTeX/plain expression; () when nothing parses."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    config = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    return tuple(parse("\\boxed{" + text + "}", extraction_config=config, parsing_timeout=None))


def parse_gold(gold: str) -> tuple[Any, ...]:
    """Parse a gold answer, given bare (`5`, `\\frac12`) or boxed (`… \\boxed{5}`, or several boxes,
    read as the list of their contents: `\\boxed{1} and \\boxed{-2}` is `1, -2`)."""
    found = _mathtext.boxes(gold)
    inner = ", ".join(c for _, _, c in found) if found else gold
    return parse_math(normalize(_mathtext.clean(inner)))


def gold_ok(gold: str, _unused: Any = None) -> bool:
    """Whether the gold parses to a sympy value (a bare string fallback such as `?` does not count)."""
    return _main_value(parse_gold(gold)) is not None


def _main_value(parsed: tuple[Any, ...]) -> Any:
    """The first non-string parse (math-verify puts the sympy value first), else None."""
    return next((p for p in parsed if not isinstance(p, str)), None)


def _is_single_valued(value: Any) -> bool:
    """A scalar gold: not a set, interval, tuple, matrix, relation or logical combination.

    An equation `x = 4` whose left side is one symbol counts as its right side (the hedge rules
    apply to such golds too)."""
    from sympy import Eq, Expr, MatrixBase, Symbol
    from sympy.matrices.expressions import MatrixExpr

    if isinstance(value, Eq) and isinstance(value.lhs, Symbol):
        value = value.rhs
    return isinstance(value, Expr) and not isinstance(value, MatrixBase | MatrixExpr)


def _is_plural(value: Any) -> bool:
    """Several candidate values at once: a set/tuple of 2+ elements, an interval or a union."""
    from sympy import FiniteSet, Interval, Tuple, Union

    if isinstance(value, FiniteSet | Tuple):
        return len(value) > 1
    return isinstance(value, Interval | Union)


def _verify(gold: tuple[Any, ...], answer: tuple[Any, ...]) -> bool:
    from math_verify import verify

    return bool(gold) and bool(answer) and verify(list(gold), list(answer), timeout_seconds=None)


def is_hedge(answer: str, parsed: tuple[Any, ...], gold: tuple[Any, ...]) -> bool:
    """Several candidates offered against a single-valued gold (see the module docstring)."""
    if not _is_single_valued(_main_value(gold)):
        return False
    if _DISJUNCTION.search(answer) or answer.count("|") % 2 or _ELLIPSIS_THEN_MORE.search(answer):
        return True
    if ("\\\\" in answer or "&" in answer) and "\\begin" not in answer:
        return True  # row/column separators outside a matrix: `5 \\\\ 6`, `5 \\& 6`
    if _is_plural(_main_value(parsed)):
        return True
    sides = _CHAIN.split(answer)
    if len(sides) > MAX_EQUATION_SIDES:
        return True
    constant_sides = 0
    for side in sides if len(sides) > 1 else ():
        value = _main_value(parse_math(side.strip()))
        if value is not None and not getattr(value, "free_symbols", True):
            constant_sides += 1
            if not _verify(gold, (value,)):
                return True  # a constant side that is not the gold: `4 = 3`, `x = 3 = 4`
        elif not _mathtext.is_lone_name(side):
            return True  # an equation to solve, not a value: `a + b = 4`, `x + 5 = 0`, `y = 2x = 4`
    return len(sides) > 1 and constant_sides == 0


def _graded_part(answer: str, single: bool, gold: str) -> str | None:
    """The part of an answer block that is graded, or None for a hedge (see `rlvr.verifiers.math`).

    Several boxes: a hedge against a single value, else the list of their contents.  One box
    after words (reasoning left in the answer block): the box, unless its own sentence offers
    another value with a disjunction.  One box beside bare content: unboxed in place (`3 \\boxed{4}` is `3 4`).
    Prose without a box: the one candidate value after the last "answer is" (or in the whole
    text); several candidates are a hedge (Math-Verify would take the last one).
    """
    found = _mathtext.boxes(answer)
    cue = list(_ANSWER_CUE.finditer(answer))
    if cue and (not found or cue[-1].start() > found[-1][1]):  # "The final answer is X" after any box
        candidates = _mathtext.prose_candidates(answer[cue[-1].end() :])
        answer = candidates[0] if len(candidates) == 1 else answer
        found = [] if len(candidates) == 1 else found
        if len(candidates) == 1:
            return _single_checks(answer, single, gold)
    if len(found) > 1:
        return None if single else ", ".join(content for _, _, content in found)
    if found:
        start, end, content = found[0]
        if not _mathtext.has_words(answer[:start] + " " + answer[end:]):
            answer = _mathtext.unbox(answer)[0]
        elif _mathtext.hedges_before(answer, start) or (single and _mathtext.hedges_after(answer, end)):
            return None  # `it is 3 or maybe \\boxed{4}`, `\\boxed{4} (or 3)`
        else:
            answer = content
    elif _mathtext.has_prose(answer):
        candidates = _mathtext.prose_candidates(answer)
        if len(candidates) != 1:
            return None
        answer = candidates[0]
    return _single_checks(answer, single, gold)


def _single_checks(answer: str, single: bool, gold: str) -> str | None:
    if len(answer) > MAX_GRADED_CHARS:
        return None
    if single and (
        _mathtext.has_hedge_marker(answer)
        or _mathtext.juxtaposed_numbers(answer)
        or _mathtext.text_digits_beside(answer)
        or _mathtext.top_level_comma(answer)
        or _mathchars.foreign_marks(answer, gold)
    ):
        return None
    return answer


def check(answer: str, gold: str) -> float | None:
    """1.0/0.0 for an extracted answer against a gold; None when the gold does not parse."""
    gold_parsed = parse_gold(gold)
    if not gold_ok(gold):
        return None
    answer = normalize(_mathtext.clean(answer))
    if not braces_balanced(answer):
        return 0.0  # `5}{6` would break out of the `\\boxed{…}` we parse it in
    single = _is_single_valued(_main_value(gold_parsed))
    graded = _graded_part(answer, single, _mathtext.clean(gold))
    if graded is None:
        return 0.0
    answer = graded
    parsed = parse_math(normalize(answer))
    if not parsed or is_hedge(answer, parsed, gold_parsed):
        return 0.0
    return 1.0 if _verify(gold_parsed, parsed) else 0.0


def equivalent(a: str, b: str) -> bool:
    """Whether two extracted answers are the same (for maj@k voting); symmetric by construction."""
    if not (braces_balanced(a) and braces_balanced(b)):
        return False
    pa, pb = parse_math(normalize(a)), parse_math(normalize(b))
    return _verify(pa, pb) and _verify(pb, pa)


def _hang(seconds: Any, _unused: Any = None) -> float:
    """Test hook: block like C code does, deaf to SIGALRM, so only the parent's kill can end it."""
    import time

    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    time.sleep(float(seconds))
    signal.signal(signal.SIGALRM, _on_alarm)
    return 1.0


OPS = {"verify": check, "gold": gold_ok, "equiv": equivalent, "_hang": _hang}
FAILED = {"verify": 0.0, "gold": False, "equiv": False, "_hang": 0.0}


def _on_alarm(signum: int, frame: Any) -> None:
    raise SoftTimeout


def run_item(op: str, a: Any, b: Any, soft_s: float) -> Any:
    """One item under the soft deadline; any failure (timeout, parser error) is FAILED[op]."""
    try:
        signal.setitimer(signal.ITIMER_REAL, max(soft_s, 1e-3))
        try:
            return OPS[op](a, b)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except (SoftTimeout, Exception):
        return FAILED.get(op, 0.0)


def main() -> None:
    """Serve requests on stdin until it closes (the parent exited or killed us)."""
    import os
    import resource

    if len(sys.argv) > 1:  # the parent's pid (`_deadline`): die with it, even when busy in C
        _lifeline.die_with(int(sys.argv[1]))
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT_BYTES, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    # The protocol gets a private copy of stdout; fd 1 (and print) go to stderr, so a stray print
    # in a parser can never corrupt a reply.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    logging.disable(logging.CRITICAL)  # math-verify warns on every failed parse
    signal.signal(signal.SIGALRM, _on_alarm)
    parse_math("1")  # import sympy/antlr now, before we report ready
    out.write(b'{"ready": true}\n')
    out.flush()
    for line in sys.stdin.buffer:
        request = json.loads(line)
        for op, a, b in request["items"]:
            out.write(json.dumps({"r": run_item(op, a, b, float(request["soft"]))}).encode() + b"\n")
            out.flush()


if __name__ == "__main__":
    main()
