"""Math verification (rlvr.verifiers.math): math-verify equivalences, hedges, golds, deadlines."""

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rlvr.verifiers import math as vm
from rlvr.verifiers.math import (
    gold_parses,
    math_equivalent,
    math_equivalent_batch,
    validate_golds,
    verify_math,
    verify_math_batch,
)

ROOT = Path(__file__).resolve().parents[2]

# (answer inside <answer>…</answer>, gold, expected score)
EQUIVALENCES = [
    # fraction vs decimal
    ("0.5", "1/2", 1.0),
    # \frac12 shorthand vs plain fraction
    ("\\frac12", "1/2", 1.0),
    # \dfrac vs decimal
    ("\\dfrac{1}{2}", "0.5", 1.0),
    # 0.333 is not 1/3 (math-verify compares rounded to 6 places)
    ("0.333", "1/3", 0.0),
    # integer vs float spelling
    ("2", "2.0", 1.0),
    # an equation whose right side is the value
    ("x = 5", "5", 1.0),
    # the variable name does not matter against a bare gold
    ("a=5", "5", 1.0),
    # ...but the value does
    ("x = 6", "5", 0.0),
    # interval ends matter: (1,2] is not [1,2]
    ("(1,2]", "[1,2]", 0.0),
    # same interval
    ("(1,2]", "(1,2]", 1.0),
    # set order does not matter
    ("\\{1,2\\}", "\\{2,1\\}", 1.0),
    # different sets
    ("\\{1,3\\}", "\\{1,2\\}", 0.0),
    # a bare list against a set gold
    ("2, 1", "\\{1,2\\}", 1.0),
    # equal matrices
    ("\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", 1.0),
    # one entry differs (4 vs 5)
    ("\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", 0.0),
    # thousands separator (comma, no space)
    ("1,000", "1000", 1.0),
    # two separators
    ("1,000,000", "1000000", 1.0),
    # gold with a separator, plain answer
    ("1000", "1,000", 1.0),
    # "1, 000" (comma then space) is the list {1, 0}: a hedge, not one thousand
    ("1, 000", "1000", 0.0),
    # LaTeX vs plain square root
    ("\\sqrt{2}", "sqrt(2)", 1.0),
    ("sqrt(2)", "\\sqrt{2}", 1.0),
    # sqrt 3 is not sqrt 2
    ("\\sqrt{3}", "\\sqrt{2}", 0.0),
    # symbolic forms simplify: (x+1)^2 = x^2+2x+1
    ("x^2+2x+1", "(x+1)^2", 1.0),
    # percentage vs its number (math-verify accepts both 50 and 0.5)
    ("50\\%", "50", 1.0),
    ("50\\%", "0.5", 1.0),
    # 40% is neither
    ("40\\%", "50", 0.0),
    # units in \text are ignored
    ("5\\text{ cm}", "5", 1.0),
    # a unit word after the number too
    ("5 apples", "5", 1.0),
    # the sign matters
    ("-3", "3", 0.0),
    # arithmetic the model did not finish still equals the value: 3+1 = 4
    ("3+1", "4", 1.0),
    # wrappers: $…$, a trailing period, "The answer is"
    ("$5$", "5", 1.0),
    ("5.", "5", 1.0),
    ("The answer is 5", "5", 1.0),
    # a boxed answer inside the answer block
    ("\\boxed{5}", "5", 1.0),
    # showing work: 2+3 = 5 (every constant side equals the gold)
    ("2+3 = 5", "5", 1.0),
    # pi is not 3.14159 at 6 decimal places' comparison
    ("\\pi", "3.14159", 0.0),
    # unicode junk does not crash and does not match
    ("五", "5", 0.0),
]

HEDGES = [
    # "or" between candidates
    ("3 or 4", "3"),
    # a bare list
    ("3, 4", "3"),
    # a set of candidates
    ("\\{3,4\\}", "3"),
    # \text{ or }
    ("3 \\text{ or } 4", "4"),
    # logical or (math-verify alone would read this as 4)
    ("3 \\lor 4", "4"),
    ("3 \\vee 4", "4"),
    # a bar between candidates (math-verify alone reads 4)
    ("3 | 4", "4"),
    # a LaTeX line break between candidates
    ("3 \\\\ 4", "4"),
    # an ellipsis then more candidates
    ("1, \\ldots, 4", "4"),
    ("3 ... 4", "4"),
    # a false equation: math-verify alone grades the last side
    ("4 = 3", "3"),
    ("x = 3 = 4", "4"),
    # semicolon-separated
    ("3; 4", "3"),
    # plus-minus gives two values
    ("3 \\pm 1", "4"),
    # an interval containing the gold
    ("[3,4]", "3"),
    # two boxes in the answer block
    ("\\boxed{3}\\boxed{4}", "4"),
    # equation list
    ("x=3, x=4", "4"),
    # an arrow chain: "3, no: 4" (math-verify alone grades the last side)
    ("3 \\to 4", "4"),
    ("3 \\Rightarrow 4", "4"),
    # a column separator outside a matrix (math-verify alone reads 4)
    ("3 \\& 4", "4"),
    # brace injection: "3}{4" would become \boxed{3}{4} in the parser's wrapper
    ("4}{3", "4"),
    # candidates inside \text
    ("\\text{3 or 4}", "4"),
    # a parenthetical alternative
    ("4 (or 3)", "4"),
]


@pytest.mark.parametrize(("answer", "gold", "expected"), EQUIVALENCES)
def test_equivalences(answer, gold, expected):
    assert verify_math(f"<think>work</think><answer>{answer}</answer>", gold) == expected


@pytest.mark.parametrize(("answer", "gold"), HEDGES)
def test_hedged_answers_score_zero(answer, gold):
    assert verify_math(f"<think>work</think><answer>{answer}</answer>", gold) == 0.0


def test_chains_that_agree_are_not_hedges():
    # paired bars are an absolute value: |-4| = 4
    assert verify_math("<answer>|-4|</answer>", "4") == 1.0
    # an arrow from a variable: x -> 4
    assert verify_math("<answer>x \\to 4</answer>", "4") == 1.0
    # every constant side equals the gold: 2+2 -> 4
    assert verify_math("<answer>2+2 \\to 4</answer>", "4") == 1.0
    # a one-element set is not several candidates
    assert verify_math("<answer>\\{4\\}</answer>", "4") == 1.0


REGION_CASES = [
    # correct answer only inside the reasoning
    ("<think>it is \\boxed{5}</think> I am not sure", 0.0),
    # unterminated think with the correct answer
    ("<think>so <answer>5</answer>", 0.0),
    # several boxes after the think: the last one counts (wrong here)
    ("<think>r</think> \\boxed{5} no wait \\boxed{6}", 0.0),
    # several boxes after the think: the last one counts (right here)
    ("<think>r</think> \\boxed{6} no wait \\boxed{5}", 1.0),
    # empty answer block
    ("<think>r</think><answer></answer>", 0.0),
    # no answer at all
    ("<think>r</think>", 0.0),
    # boxed gold and nested braces in the answer
    ("<answer>\\frac{10}{2}</answer>", 1.0),
]


@pytest.mark.parametrize(("completion", "expected"), REGION_CASES)
def test_only_the_answer_region_is_graded(completion, expected):
    assert verify_math(completion, "\\boxed{5}") == expected


@pytest.mark.parametrize(
    ("gold", "parses"),
    [
        ("5", True),  # a number
        ("\\boxed{\\frac{1}{2}}", True),  # a boxed gold (MATH style)
        ("The answer is \\boxed{3}", True),  # a boxed gold inside a solution
        ("\\text{Monday}", True),  # a text answer math-verify turns into a symbol
        ("", False),  # empty
        ("   ", False),  # blank
        ("\\boxed{}", False),  # empty box
        ("?", False),  # only a string fallback, no value
        ("}{", False),  # garbage
    ],
)
def test_gold_parses(gold, parses):
    assert gold_parses(gold) is parses
    # an unparseable gold makes the item unscorable (None), never 1.0
    assert (verify_math(f"<answer>{gold}</answer>", gold) is None) is (not parses)


def test_validate_golds_reports_dropped():
    # golds 0 and 2 parse, 1 ("") does not: kept [0, 2], dropped 1
    assert validate_golds(["1", "", "\\frac{2}{3}"]) == ([0, 2], 1)


def test_math_equivalent_is_symmetric():
    # 1/2 and 0.5, both ways
    assert math_equivalent("1/2", "0.5") and math_equivalent("0.5", "1/2")
    # x = 5 and 5, both ways
    assert math_equivalent("x = 5", "5") and math_equivalent("5", "x = 5")
    # 3 and 4 differ
    assert not math_equivalent("3", "4")
    # empty answers are never equivalent
    assert not math_equivalent("", "")
    # batch agrees with single calls
    assert math_equivalent_batch([("1/2", "0.5"), ("3", "4"), ("a", "a")]) == [True, False, True]


def test_batch_equals_single_calls():
    completions = ["<answer>0.5</answer>", "<answer>3 or 4</answer>", "<answer>2</answer>", "no answer"]
    golds = ["1/2", "3", "", "7"]
    # gold "" does not parse -> None; missing answer -> 0.0
    assert verify_math_batch(completions, golds) == [1.0, 0.0, None, 0.0]
    assert [verify_math(c, g) for c, g in zip(completions, golds)] == [1.0, 0.0, None, 0.0]
    with pytest.raises(ValueError, match="2 completions but 1 golds"):
        verify_math_batch(["a", "b"], ["1"])


def test_one_megabyte_completion_is_fast():
    # 1 MB of reasoning then a correct answer: found and graded quickly (tail clipping, rfind)
    start = time.perf_counter()
    assert verify_math("<think>" + "x{(" * 350_000 + "</think><answer>5</answer>", "5") == 1.0
    # 1 MB of box openers: extraction gives None, nothing is parsed
    assert verify_math("\\boxed{" * 150_000, "5") == 0.0
    assert time.perf_counter() - start < 1.0


def test_over_long_answer_scores_zero_without_parsing():
    # a 5,000-digit answer exceeds MAX_ANSWER_CHARS (1,000): 0.0 at once
    start = time.perf_counter()
    assert verify_math("<answer>" + "9" * 5_000 + "</answer>", "5") == 0.0
    assert time.perf_counter() - start < 0.5


def test_hard_deadline_kills_a_hung_worker():
    # `_hang` ignores SIGALRM like C code does: only the parent's kill (after 0.3 + 0.5 s) ends it
    restarts = vm._WORKER.restarts
    start = time.perf_counter()
    assert vm._WORKER.run([["_hang", 60, None], ["gold", "5", None]], 0.3, on_timeout="killed") == [
        "killed",
        True,  # the item after the hang runs in a fresh worker
    ]
    assert time.perf_counter() - start < 0.3 + 0.5 + 5.0  # deadline + restart of the worker
    assert vm._WORKER.restarts == restarts + 1
    # the worker serves normally afterwards
    assert verify_math("<answer>1/2</answer>", "0.5") == 1.0


@pytest.mark.parametrize(
    "bomb",
    [
        "9^{9^{9^{9^{9}}}}",  # a power tower
        "(10^{10^{10}})!",  # a huge factorial
        "99999999^{99999999}",  # a bignum power
        "(" * 300 + "1" + ")" * 300,  # deeply nested brackets
        "\\sqrt{" * 300 + "2" + "}" * 300,  # deeply nested commands
    ],
    ids=["tower", "factorial", "bignum", "brackets", "sqrt"],
)
def test_pathological_answers_return_within_the_deadline(bomb):
    start = time.perf_counter()
    assert verify_math(f"<answer>{bomb}</answer>", "5", timeout_s=1.0) == 0.0
    assert time.perf_counter() - start < 1.0 + 0.5 + 1.0


def test_works_off_the_main_thread():
    # math-verify's own SIGALRM timeout fails off the main thread; ours does not
    results = []
    threads = [
        threading.Thread(target=lambda g=g: results.append(verify_math("<answer>0.5</answer>", g)))
        for g in ("1/2", "1/3")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(results) == [0.0, 1.0]


def _run_python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_spawns_nothing_and_exit_reaps_the_worker():
    # importing starts no process
    assert _run_python(
        """
        import os, sys, rlvr.verifiers, rlvr.verifiers.math as m
        print(all(w._proc is None for w in m._WORKER.workers), open(f"/proc/self/task/{os.getpid()}/children").read().strip() == "")
        m.verify_math("<answer>1/2</answer>", "0.5")  # the parent never imports sympy or torch itself
        print(not {"sympy", "math_verify", "torch"} & set(sys.modules))
        """
    ).split() == ["True", "True", "True"]
    # after a call and interpreter exit, the worker is gone (dead or a zombie awaiting a reaper)
    pid = int(
        _run_python(
            "import rlvr.verifiers.math as m; m.verify_math('1', '1'); print(m._WORKER.workers[0]._proc.pid)"
        )
    )
    time.sleep(0.2)
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "State:\tZ" in status.read_text()
