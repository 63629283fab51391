"""Issue 12's answer-side holes: math hedges and misparses, format, countdown, parser DoS.

Each HOLE row is a wrong or hedged answer that must score 0; each FALSE_NEGATIVE row a right
answer that must score 1.  Pathological inputs of 1 MB must come back well under a second per
extractor (asserted with a generous 2 s bound: no timing flakiness, but quadratic code fails).
"""

from __future__ import annotations

import time

import pytest

from rlvr.verifiers.code import extract_code
from rlvr.verifiers.countdown import verify_countdown
from rlvr.verifiers.format import tag_count_reward, think_answer_format
from rlvr.verifiers.math import verify_math
from rlvr.verifiers.region import extract_answer, last_boxed


def r1(answer: str) -> str:
    return f"<think>work</think><answer>{answer}</answer>"


MATH_HOLES = [  # (answer, single-valued gold): more than one candidate, a relation, or a misparse
    ("3 \\cup 4", "4"), ("\\{3\\} \\cup \\{4\\}", "4"), ("3 \\sim 4", "4"), ("3 \\Leftrightarrow 4", "4"),
    ("3 == 4", "4"), ("x := 3 == 4", "4"), ("\\begin{cases} 3 \\\\ 4 \\end{cases}", "4"),
    ("\\begin{cases} 3 & x>0 \\\\ 4 & x<0 \\end{cases}", "4"), ("3 \\text{, } 4", "4"), ("3 \u2228 4", "4"),
    ("3 \\vert 4", "4"), ("3 \\quad 4", "4"), ("3 \\qquad 4", "4"), ("3\\;4", "4"), ("4 \\, 5", "4"),
    ("4 ~ 5", "4"), ("4 \\hspace{1cm} 5", "4"), ("4\u200b5", "4"), ("4 \u222a 5", "4"), ("4 \\approx 5", "4"),
    ("4 \\equiv 5", "4"), ("4 \\neq 5", "4"), ("4 < 5", "4"), ("4 \\pm 1", "4"), ("x = \\pm 4", "4"),
    ("4 \\textrm{ or } 5", "4"), ("4 \\mathrm{or} 5", "4"), ("4 \\text{(or 5)}", "4"),
    ("\\boxed{4} 3", "4"), ("3 \\boxed{4}", "4"), ("\\boxed{3} \\boxed{4}", "4"),
    ("x=4 \\text{ or } x=5", "x=4"), ("x = 4, 5", "x=4"), ("x=4 \\lor x=5", "x=4"), ("x = 4 \\quad x = 5", "x=4"),
    ("a + b = 4", "4"), ("x + 5 = 0", "-5"), ("y = 2x = 4", "4"), ("x^2 = 16", "4"), ("4 = 3", "3"),
    ("\\neg 4", "4"), ("\\lnot 4", "4"), ("\\phantom{4}", "4"), ("3\\phantom{4}", "4"), ("\\hphantom{4}", "4"),
    ("It is 3 or maybe 4.", "4"), ("The answer is 3, not 4.", "4"), ("x \\in \\{4, 5\\}", "4"),
]  # fmt: skip
MATH_FALSE_NEGATIVES = [  # (answer, gold): right answers that must score 1
    ("10\\,000", "10000"), ("10\\,000", "10\\,000"), ("1\\,000\\,000", "1000000"), ("1 000", "1000"),
    ("1{,}000", "1000"), ("\\textcolor{red}{5}", "5"), ("\\color{red}{5}", "5"), ("\\color{red} 5", "5"),
    ("x = 5", "5"), ("f(x) = 5", "5"), ("x := 4", "4"), ("x = 4 = 4", "4"), ("4\\text{ cm}", "4"),
    ("\\frac{8}{2}", "4"), ("\\sqrt{16}", "4"), ("3 \u2212 4", "-1"), ("\u22124", "-4"), ("2 \\sqrt{3}", "2\\sqrt{3}"),
    ("The largest $n$ is 34.", "34"), ("\\boxed{1} and \\boxed{-2}", "\\boxed{-2,1}"), ("x \\geq 5", "x \\geq 5"),
    ("4 \\text{ or } 5", "4 \\text{ or } 5"), ("x = 4", "x=4"), ("\\textbf{4}", "4"),
]  # fmt: skip


@pytest.mark.parametrize(("answer", "gold"), MATH_HOLES)
def test_math_holes_score_zero(answer: str, gold: str) -> None:
    assert verify_math(r1(answer), gold) == 0.0


@pytest.mark.parametrize(("answer", "gold"), MATH_FALSE_NEGATIVES)
def test_math_false_negatives_fixed(answer: str, gold: str) -> None:
    assert verify_math(r1(answer), gold) == 1.0


FORMAT_HOLES = [
    "<think>\u200b</think><answer>5</answer>", "<think>\x00</think><answer>5</answer>",
    "<think>a</think><answer>\u200b\u2060\ufeff</answer>", "<think>\u00ad</think><answer>5</answer>",
    "<think>a</think>x<answer>5</answer>", "<think>a</think><answer>5</answer>\u200bx",
]  # fmt: skip


@pytest.mark.parametrize("completion", FORMAT_HOLES)
def test_format_holes(completion: str) -> None:
    assert think_answer_format(completion) == 0.0


def test_invisible_characters_around_blocks_are_whitespace() -> None:
    assert think_answer_format("\u200b<think>a</think>\ufeff<answer>5</answer>\x00") == 1.0


@pytest.mark.parametrize(
    ("answer", "numbers", "target", "expected"),
    [
        ("5 \u2212 2", [5, 2], 3, 1.0), ("(5 \u2212 2) \u00d7 2", [5, 2, 2], 6, 1.0), ("\u22122 + 5", [2, 5], 3, 0.0),
        ("5 \u2013 2", [5, 2], 3, 0.0), ("5 \u2212\u2212 2", [5, 2], 7, 0.0), ("5\u200b2", [5, 2], 52, 0.0),
    ],
)  # fmt: skip
def test_countdown_minus_sign(answer: str, numbers: list[int], target: int, expected: float) -> None:
    assert verify_countdown(r1(answer), numbers, target) == expected


MB = 1 << 20
PATHOLOGICAL = {
    "fence_blanks": "```" + " " * MB,
    "fence_tabs_then_text": "```" + "\t" * MB + "x",
    "many_fences": "```x" * (MB // 4),
    "many_open_fences": "```\n" * (MB // 4),
    "open_think": "<think>" + "a" * MB,
    "nested_braces": "\\boxed{" * (MB // 7),
    "answer_tags": "<answer>" * (MB // 8) + "</answer>",
    "backslashes": "\\" * MB,
    "dollars": "$" * MB,
    "digits_spaces": "1 " * (MB // 2),
}


@pytest.mark.parametrize("name", list(PATHOLOGICAL))
def test_extractors_are_linear_on_1mb(name: str) -> None:
    text = PATHOLOGICAL[name]
    for fn in (
        extract_code, extract_answer, last_boxed, think_answer_format, tag_count_reward,
        lambda t: verify_countdown(t, [1, 2, 3], 6), lambda t: verify_math(t, "4"), lambda t: verify_math(r1(t), "4"),
    ):  # fmt: skip
        start = time.perf_counter()
        fn(text)
        assert time.perf_counter() - start < 2.0, (name, fn)
