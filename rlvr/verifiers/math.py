"""Math answer verification: a thin, hardened wrapper around the math-verify package.

`verify_math(completion, gold)` extracts the final answer (`region.extract_answer`: last
`<answer>` after the last `</think>`, else the last `\\boxed{}`) and asks math-verify whether it
equals the gold.  math-verify (HF) supplies the equivalences: fractions vs decimals, `x = 5` vs
`5`, interval ends, sets in any order, matrices, `1,000` = `1000`, LaTeX vs plain, `\\dfrac`,
percentages (`50\\%` matches both `50` and `0.5`, math-verify's choice), `\\text{ cm}` units.

Our additions, all scoring 0 (see `_mathworker` and `_mathtext` for the exact rules):
- *Hedges* against a single-valued gold (a number or expression, or an equation `x = 4` whose left
  side is one symbol): any answer presenting more than one candidate, whatever the separator.
  Words (`or`, `and`, `not`), `;`, `==`, logic / set / relation symbols (`\\lor`, `\\vee`, `∨`, `\\cup`,
  `\\sim`, `\\approx`, `\\Leftrightarrow`, `\\vert`, `\\mid`, `<`, `\\le`, `\\pm`, ...), unpaired `|`, `\\\\`
  or `&` outside a matrix, a `cases`-like environment, `1, \\ldots, 4`, a set/tuple/interval of
  several values, two bare numbers side by side (`3 4`, `3 \\quad 4`, `3 \\text{, } 4`), several boxes,
  or a box beside another number (`3 \\boxed{4}`).  Note `1, 000` (comma and a space) is the
  list {1, 0}, hence a hedge; `1,000`, `1 000` and `10\\,000` are thousands.
- *Equations* (the convention): `x = 5`, `f(x) = 5`, `x := 5` answer the gold 5 (every side is a
  lone name or a constant equal to the gold, and at least one side is a constant); `x + 5 = 0`,
  `a + b = 4`, `y = 2x = 4`, `4 = 3` do not (an equation to solve is not a value).
- *Foreign marks* against a single-valued gold (`_mathchars`): only allowlisted LaTeX commands and
  characters (plus any the gold uses); math-verify skips the rest, so `3 \\foo 4`, `3 ? 4`,
  `3 \\colon 4`, `3 ⟶ 4`, `3 ， 4` or `3 或 4` would be read as 4.  Also `3 \\text{4}` (a value
  inside `\\text` beside another), `4, 4` (a list), and, in `region`, several `<answer>` blocks.
  Digits of other scripts (`４`, `٤`, `𝟒`), superscripts (`3⁴`) and `½` are read as what they show.
- Misparses are not credited: `\\neg 4` (math-verify reads 4) and `\\phantom{4}` (invisible, so
  deleted before parsing).  Fixed false negatives: `\\textcolor{red}{5}` and `\\color{red} 5` are 5.
- Prose answers: a final sentence with exactly one candidate value (`The largest $n$ is 34.`) is
  graded on that value; prose with several candidates scores 0 (Math-Verify takes the last one).
- Answer blocks longer than `MAX_ANSWER_CHARS`, graded parts longer than 1 000 characters.
- "The final answer is X" after any box grades X (one candidate only).
- Anything that overruns the deadline (parser bombs such as `9^{9^{9^{9}}}` or `10000!`).
- Invisible characters are spaces and U+2212 is a minus before anything is parsed.

Model text never reaches `eval`/`sympify` here: it is parsed only by math-verify, in child
processes (`_deadline.WorkerPool`, `$RLVR_MATH_WORKERS`, default min(4, cores)) under a hard
wall-clock deadline per item: the child stops itself with SIGALRM after `timeout_s`, and the
parent kills (SIGKILL) and restarts it at `timeout_s + 0.5` s, so C-level hangs end too.  Works
from any thread; children start on first use (not at import) and are killed at exit.  A new
gold costs one extra (cached) round trip, so a call is bounded by about 2 x (timeout_s + 0.5) s
plus a worker restart after a kill.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from rlvr.verifiers._deadline import WorkerPool
from rlvr.verifiers.region import extract_answer

DEFAULT_TIMEOUT_S = 3.0
MAX_ANSWER_CHARS = 20_000  # the answer block; its graded part is capped at 1 000 (`_mathworker`)
_GOLD_CACHE_SIZE = 1 << 16
_MAX_EQUIV_CHARS = 1_000  # maj@k voting compares extracted answers, never whole blocks


def _pool_size() -> int:
    """Parser processes: $RLVR_MATH_WORKERS, else up to 4 (one per core on small machines)."""
    try:
        return max(1, int(os.environ["RLVR_MATH_WORKERS"]))
    except (KeyError, ValueError):
        return max(1, min(4, os.cpu_count() or 1))


_WORKER = WorkerPool("rlvr.verifiers._mathworker", _pool_size())
_gold_cache: dict[str, bool] = {}


def _golds_ok(golds: Sequence[str], timeout_s: float) -> list[bool]:
    """Whether each gold parses, asking the workers only about golds not seen before."""
    known = {g: _gold_cache.get(g) for g in golds if isinstance(g, str)}
    unseen = sorted(g for g, ok in known.items() if ok is None)
    if unseen:
        verdicts = _WORKER.run([["gold", g, None] for g in unseen], timeout_s, on_timeout=False)
        known.update(zip(unseen, verdicts))
        if len(_gold_cache) + len(unseen) > _GOLD_CACHE_SIZE:
            _gold_cache.clear()
        _gold_cache.update(zip(unseen, verdicts))
    return [isinstance(g, str) and bool(known[g]) for g in golds]


def verify_math_batch(
    completions: Sequence[str], golds: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[float | None]:
    """`verify_math` for many items in one worker round trip (plus one for golds not seen before).

    Each item gets its own deadline of `timeout_s` (+0.5 s grace before the worker is killed).
    """
    if len(completions) != len(golds):
        raise ValueError(f"verify_math_batch: {len(completions)} completions but {len(golds)} golds")
    ok = _golds_ok(golds, timeout_s)
    results: list[float | None] = [0.0 if good else None for good in ok]
    todo: list[tuple[int, list[str]]] = []
    for i, (completion, gold) in enumerate(zip(completions, golds)):
        answer = extract_answer(completion) if ok[i] else None
        if answer is None or len(answer) > MAX_ANSWER_CHARS:
            continue
        if answer == gold.strip():
            results[i] = 1.0  # identical strings need no parser
        else:
            todo.append((i, ["verify", answer, gold]))
    verdicts = _WORKER.run([item for _, item in todo], timeout_s, on_timeout=0.0)
    for (i, _), verdict in zip(todo, verdicts):
        results[i] = None if verdict is None else float(verdict)
    return results


def verify_math(completion: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> float | None:
    """1.0 when the completion's final answer equals `gold`, else 0.0; None when `gold` does not parse.

    Never raises on model text; returns within about `timeout_s + 0.5` s per parse (the gold's,
    once per distinct gold, and the answer's).
    """
    return verify_math_batch([completion], [gold], timeout_s=timeout_s)[0]


def math_equivalent_batch(
    pairs: Sequence[tuple[str, str]], *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> list[bool]:
    """`math_equivalent` for many pairs in one worker round trip."""
    results = [False] * len(pairs)
    todo: list[tuple[int, list[str]]] = []
    for i, (a, b) in enumerate(pairs):
        if not (isinstance(a, str) and isinstance(b, str)) or not a.strip() or not b.strip():
            continue
        if max(len(a), len(b)) > _MAX_EQUIV_CHARS:
            continue
        if a.strip() == b.strip():
            results[i] = True
        else:
            todo.append((i, ["equiv", a, b]))
    for (i, _), verdict in zip(todo, _WORKER.run([t for _, t in todo], timeout_s, on_timeout=False)):
        results[i] = bool(verdict)
    return results


def math_equivalent(a: str, b: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether two already-extracted answers are the same value (symmetric; for maj@k voting)."""
    return math_equivalent_batch([(a, b)], timeout_s=timeout_s)[0]


def gold_parses(gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """Whether `gold` parses to something math-verify can compare (cached per distinct gold)."""
    return _golds_ok([gold], timeout_s)[0]


def validate_golds(golds: Iterable[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[list[int], int]:
    """(indices of golds that parse, number dropped): pre-validate a dataset when it loads."""
    golds = list(golds)
    ok = _golds_ok(golds, timeout_s)
    kept = [i for i, good in enumerate(ok) if good]
    return kept, len(golds) - len(kept)


def shutdown() -> None:
    """Stop the parsing workers now (they also stop at exit); the next call starts new ones."""
    _WORKER.close()
