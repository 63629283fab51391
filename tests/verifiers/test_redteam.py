"""Red-team round 2 (issue s7-a): holes the earlier suites did not cover, by class.

Each MATH_HOLE row is an answer that scored 1.0 before this round and must score 0: math-verify
skips what it cannot read, so anything it ignores between two candidates let a model show two
values and be graded on one.  The fix is an allowlist for single-valued golds (`_mathchars`):
the stricter reading, since a false negative on an exotic notation costs less in RL than a
false positive.  FIXED rows are right answers in other scripts that scored 0 before.
"""

from __future__ import annotations

import time

import pytest

from rlvr.verifiers import _mathtext
from rlvr.verifiers.countdown import verify_countdown
from rlvr.verifiers.format import think_answer_format
from rlvr.verifiers.math import verify_math, verify_math_batch
from rlvr.verifiers.region import extract_answer


def r1(answer: str) -> str:
    return f"<think>work</think><answer>{answer}</answer>"


MATH_HOLES = [  # (answer, gold): each scored 1.0 before this round
    # commands math-verify skips, so the first value vanishes: `3 \foo 4` was read as 4
    ("3 \\foo 4", "4"), ("\\smash{3} 4", "4"), ("\\llap{3} 4", "4"), ("\\tag{3} 4", "4"), ("\\hidden{3} 4", "4"),
    ("3 \\colon 4", "4"), ("3 \\slash 4", "4"), ("3 \\backslash 4", "4"), ("3 \\# 4", "4"), ("3 \\_ 4", "4"),
    # crossed-out candidates are still shown (stricter reading: `\cancel{3} 4` shows 3 and 4)
    ("\\cancel{3} 4", "4"), ("\\sout{3} 4", "4"), ("\\bcancel{3} 4", "4"),
    # arrows and relations math-verify does not know
    ("3 \\longmapsto 4", "4"), ("3 \\rightsquigarrow 4", "4"), ("3 \\xrightarrow{} 4", "4"), ("3 \\searrow 4", "4"),
    ("3 \\uparrow 4", "4"), ("3 \u27f6 4", "4"), ("3 \u21a6 4", "4"), ("3 \u27f9 4", "4"), ("3 \u2a7d 4", "4"),
    # fullwidth / CJK punctuation and other scripts' words between candidates
    ("3 \uff1c 4", "4"), ("3 \uff0f 4", "4"), ("3 \uff0c 4", "4"), ("3 \u3001 4", "4"), ("3 \uff5c 4", "4"),
    ("3 \u2225 4", "4"), ("3 \u2016 4", "4"), ("3 \u00a6 4", "4"), ("3 \u6216 4", "4"), ("3 \u0623\u0648 4", "4"),
    ("3 ? 4", "4"), ("3 \\text{ (4?)}", "3"), ("\\e 3", "3"), ("3 \\bmod 4", "4"), ("3 \\choose 4", "4"),
    # `\big(` made math-verify skip the group: `\big( 3 \big) 4` was read as 4
    ("\\big( 3 \\big) 4", "4"), ("\\Bigl( 3 \\Bigr) 4", "4"), ("\\operatorname{3} 4", "4"),
    # a value inside \text / \mathrm beside another value
    ("3 \\text{4}", "3"), ("3 \\mathrm{4}", "3"), ("3 \\text{(4)}", "3"),
    # words after a box that offer another value (only the sentence before the box was checked)
    ("I think \\boxed{4}, but it may be 3", "4"), ("\\boxed{4} (or 3)", "4"), ("$\\boxed{4}$, or maybe $3$", "4"),
    ("So we get \\boxed{4}. Alternatively 3.", "4"), ("\\boxed{4}, though 3 also works", "4"),
    # the same value twice is a list, not an answer
    ("4, 4", "4"),
    # digits of other scripts next to ASCII ones are two values (were dropped, so `٤ 3` was 3)
    ("\uff14 3", "3"), ("\u0664 3", "3"), ("3 \U0001d7d2", "4"), ("3 \u2463", "4"),
    # invisible separators and bidi controls are separators
    ("4\u20633", "43"), ("4\u20633", "4"), ("3\u202e4", "4"),
]  # fmt: skip
MATH_FIXED = [  # (answer, gold): right answers that scored 0.0 before
    ("\uff14", "4"), ("\u0664", "4"), ("\U0001d7d2", "4"), ("\u0967\u0968", "12"), ("3\u2074", "81"),
    ("2\u00b2", "4"), ("\u00bd", "1/2"), ("\u2153", "\\frac{1}{3}"), ("x\u2082 = 4", "4"), ("\uff14\uff12", "42"),
]  # fmt: skip
STILL_RIGHT = [  # (answer, gold): right answers the allowlist must not refuse
    ("\\frac{8}{2}", "4"), ("\\sqrt[3]{64}", "4"), ("\\left( 4 \\right)", "4"), ("\\displaystyle 4", "4"),
    ("4^\\circ", "4"), ("4 \\,\\text{m}", "4"), ("1,000", "1000"), ("\\boxed{\\boxed{4}}", "4"), ("\\fbox{4}", "4"),
    ("\\max(3, 4)", "4"), ("\\lfloor 4.5 \\rfloor", "4"), ("x \\to 4", "4"), ("4\\%", "4"), ("\\text{4}", "4"),
    ("4 \\quad", "4"), ("\\dfrac{\\pi}{2}", "\\frac{\\pi}{2}"), ("\\theta = 4", "4"), ("3:4", "3:4"),
    ("So we get \\boxed{4} cm^2.", "4"), ("$\\boxed{4}$ after 5 years.", "4"), ("so it is \\boxed{9} \\pmod{11}.", "9"), ("The answer is \\boxed{4}.", "4"), ("\\big( 4 \\big)", "4"), ("\\phantom{3}4", "4"), ("\\hspace{3pt} 4", "4"),  # (the 3s are invisible)
    ("\\overrightarrow{4}", "\\overrightarrow{4}"),  # a command the gold itself uses is allowed
]  # fmt: skip


def test_math_holes_score_zero() -> None:
    scores = verify_math_batch([r1(a) for a, _ in MATH_HOLES], [g for _, g in MATH_HOLES])
    assert [(a, g) for (a, g), s in zip(MATH_HOLES, scores) if s != 0.0] == []


def test_other_scripts_digits_are_read() -> None:
    scores = verify_math_batch([r1(a) for a, _ in MATH_FIXED], [g for _, g in MATH_FIXED])
    assert [(a, g) for (a, g), s in zip(MATH_FIXED, scores) if s != 1.0] == []


def test_allowlist_keeps_right_answers() -> None:
    scores = verify_math_batch([r1(a) for a, _ in STILL_RIGHT], [g for _, g in STILL_RIGHT])
    assert [(a, g) for (a, g), s in zip(STILL_RIGHT, scores) if s != 1.0] == []


def test_mixed_number_with_vulgar_fraction_is_refused() -> None:
    # `2½` is 5/2 to a reader but a product to a parser; neither reading is credited
    assert verify_math(r1("2\u00bd"), "5/2") == 0.0
    assert verify_math(r1("2\u00bd"), "1") == 0.0


@pytest.mark.parametrize(
    "completion",
    [
        "<think>r</think><answer>3</answer><answer>4</answer>",  # two final answers, different values
        "<think>r</think><answer>4</answer><answer>4</answer>",  # repeated: still two declarations
        "<think>r</think><answer><answer>4</answer>",  # nested open
        "<think>r</think><answer>4</answer><answer>",  # a second answer begun
        "<think>r</think><answer>4</answer></answer>",
        "<think>r</think><answer>3</answer> so \\boxed{4}",  # an answer after the closing tag
    ],
)
def test_several_final_answers_grade_none(completion: str) -> None:
    assert extract_answer(completion) is None
    assert verify_math(completion, "4") == 0.0


def test_one_answer_block_with_reasoning_answers_still_count() -> None:
    # answers in the thinking are ignored, not counted as a second declaration
    assert verify_math("<think><answer>3</answer> \\boxed{3}</think><answer>4</answer>", "4") == 1.0


FORMAT_HOLES = [  # invisible fillers that `str.strip` keeps: the block looked non-empty
    "<think>\u2800</think><answer>5</answer>", "<think>\u3164</think><answer>5</answer>",
    "<think>a</think><answer>\u2063</answer>", "<think>a</think><answer>\ufe0f</answer>",
    "<think>a</think><answer>\u034f</answer>", "<think>a</think><answer>\u202e</answer>",
    "<think>a</think><answer>\U000e0020</answer>", "<think>a</think><answer>\u115f</answer>",
    "<think>a</think><answer>\uffa0</answer>",
]  # fmt: skip


@pytest.mark.parametrize("completion", FORMAT_HOLES)
def test_format_invisible_fillers_are_blank(completion: str) -> None:
    assert think_answer_format(completion) == 0.0


@pytest.mark.parametrize(
    ("answer", "numbers", "target", "expected"),
    [
        ("1+2+3\u200b", [1, 2, 3], 6, 1.0),  # a zero-width space is a space (was 0)
        ("1+2\u20633", [1, 2, 3], 6, 0.0),  # an invisible separator does not join or vanish
        ("\uff11+2+3", [1, 2, 3], 6, 0.0),  # fullwidth digits are not the game's literals
        ("6\u22152", [6, 2], 3, 0.0), ("6\u20442", [6, 2], 3, 0.0), ("6 \u2217 2", [6, 2], 12, 0.0),
        ("6 x 2", [6, 2], 12, 0.0), ("6 \\ast 2", [6, 2], 12, 0.0), ("\\frac{6}{2}", [6, 2], 3, 0.0),
        ("1+2+3 = 6 = 6", [1, 2, 3], 6, 0.0), ("1+2+3=6.0", [1, 2, 3], 6, 0.0), ("1+2+3 = 06", [1, 2, 3], 6, 0.0),
        ("[1+2+3]", [1, 2, 3], 6, 0.0), ("{1+2+3}", [1, 2, 3], 6, 0.0), ("1 +\n2 +\t3", [1, 2, 3], 6, 1.0),
    ],
)  # fmt: skip
def test_countdown_notation(answer: str, numbers: list[int], target: int, expected: float) -> None:
    assert verify_countdown(r1(answer), numbers, target) == expected


N = 19_999  # just under the answer block's cap, so the text reaches every rule
ADVERSARIAL = {
    "phantom_unbalanced": "\\phantom{" * (N // 9), "color_unbalanced": "\\color{" * (N // 7),
    "textcolor_unbalanced": "\\textcolor{r}{" * (N // 14), "text_unbalanced": "\\text{" * (N // 6),
    "text_nested": "\\text{" * (N // 12) + "}" * (N // 12), "thousands_tail": "1" + " 000" * (N // 4 - 1) + "0",
    "dots_spaces": "..." + " " * (N - 4), "superscripts": "\u00b2" * N, "fullwidth": "\uff14" * N,
    "vulgar": "\u00bd" * N, "commands": "\\foo" * (N // 4), "commas": "1," * (N // 2),
}  # fmt: skip


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_string_rules_are_linear_on_20k_answers(name: str) -> None:
    # in-process, without the parser: quadratic rules took 1-6 s here before (clean on unbalanced
    # groups); the worker's deadline would have cut them at 3 s, burning a parser slot per item
    from rlvr.verifiers import _mathchars, _mathworker

    text = ADVERSARIAL[name]
    start = time.perf_counter()
    cleaned = _mathtext.clean(text)
    for fn in (
        _mathtext.has_hedge_marker, _mathtext.juxtaposed_numbers, _mathtext.text_digits_beside,
        _mathtext.top_level_comma, _mathtext.prose_candidates, _mathtext.boxes, _mathworker.normalize,
        lambda t: _mathchars.foreign_marks(t, "4"), lambda t: _mathworker._graded_part(t, True, "4"),
    ):  # fmt: skip
        fn(cleaned)
    assert time.perf_counter() - start < 1.0, name


@pytest.mark.parametrize(
    "bomb", ["9^{9^{9^{9}}}", "10!!!!!", "9999999!", "(x+1)^{1000000000}", "2^" * 199 + "2"]
)
def test_parser_bombs_score_zero_within_the_deadline(bomb: str) -> None:
    start = time.perf_counter()
    assert verify_math(r1(bomb), "4", timeout_s=1.0) == 0.0
    assert time.perf_counter() - start < 1.0 + 0.5 + 2.5  # deadline + kill grace + a worker restart
