"""Countdown verifier (rlvr.verifiers.countdown): every number once, + - * / only, exact arithmetic."""

from fractions import Fraction

import pytest

from rlvr.verifiers.countdown import countdown_value, verify_countdown

NUMS, TARGET = [3, 5, 7, 2], 24  # one solution: 3*5 + 7 + 2 = 24

CASES = [
    # 3*5 = 15, + 7 + 2 = 24
    ("3*5+7+2", 1.0),
    # same numbers, different order and spaces
    ("2 + 7 + 5 * 3", 1.0),
    # redundant parentheses are fine: (3*5) + (7+2) = 24
    ("((3*5)+(7+2))", 1.0),
    # all numbers once but the wrong value: (7/2)*(5+3) = 3.5*8 = 28 != 24
    ("(7/2)*(5+3)", 0.0),
    # right value, numbers reused: 3*(7+7/7) = 3*8 = 24 uses 7 three times, never 5 or 2
    ("3*(7+7/7)", 0.0),
    # right value, 3 used twice and 7 unused: 3*(5+2)+3 = 21+3 = 24
    ("3*(5+2)+3", 0.0),
    # another correct solution: 3*7+5-2 = 21+5-2 = 24
    ("3*7+5-2", 1.0),
    # 3*7+3 = 24 skips 5 and 2 and reuses 3
    ("3*7+3", 0.0),
    # unicode operators: 3×5+7+2 = 24
    ("3×5+7+2", 1.0),
    # LaTeX operators: 3 \times 5 + 7 + 2 = 24
    ("3 \\times 5 + 7 + 2", 1.0),
    # trailing "= 24" (the target) is accepted
    ("3*5+7+2 = 24", 1.0),
    # trailing "= 25" (not the target) is rejected even though the left side equals 24
    ("3*5+7+2 = 25", 0.0),
    # two equals signs
    ("3*5+7+2 = 24 = 24", 0.0),
    # right value through unary minus: -2+7*3+5 = -2+21+5 = 24, rejected (binary operations only)
    ("-2+7*3+5", 0.0),
    # exponent
    ("3**2+5+7+2", 0.0),
    # floor division
    ("3*5+7//1+2", 0.0),
    # decimal literal
    ("3*5+7+2.0", 0.0),
    # leading zero literal
    ("3*5+07+2", 0.0),
    # division by zero, every number once: 5-3-2 = 0
    ("7/(5-3-2)", 0.0),
    # letters / function calls
    ("abs(3)*5+7+2", 0.0),
    # unbalanced parentheses
    ("(3*5+7+2", 0.0),
    # trailing garbage
    ("3*5+7+2)", 0.0),
    # empty expression
    ("", 0.0),
]


@pytest.mark.parametrize(("answer", "expected"), CASES)
def test_verify_countdown(answer, expected):
    assert verify_countdown(f"<think>search</think><answer>{answer}</answer>", NUMS, TARGET) == expected


def test_fraction_intermediates_are_exact():
    # 8 / (3 - 8/3) = 8 / (1/3) = 24 : needs exact rationals (floats give 23.999999999999996)
    assert verify_countdown("<answer>8/(3-8/3)</answer>", [8, 3, 8, 3], 24) == 1.0
    assert countdown_value("8/(3-8/3)", [3, 3, 8, 8]) == Fraction(24)


def test_digit_concatenation_scores_zero():
    # "12" is not 1 and 2: 12+3 = 15 would hit the target with concatenated digits
    assert verify_countdown("<answer>12+3</answer>", [1, 2, 3], 15) == 0.0
    # the honest way to 15 from 1, 2, 3 does not exist, but (1+2)*3 = 9 does for target 9
    assert verify_countdown("<answer>(1+2)*3</answer>", [1, 2, 3], 9) == 1.0


def test_countdown_value_rules():
    # 1+2 over [1,2] = 3
    assert countdown_value("1+2", [1, 2]) == 3
    # one number used twice
    assert countdown_value("1+1", [1, 2]) is None
    # more literals than numbers is rejected early
    assert countdown_value("1+1+1+1", [1]) is None
    # division by zero
    assert countdown_value("1/(2-2)", [1, 2, 2]) is None
    # nesting deeper than the bound (33 levels)
    assert countdown_value("(" * 33 + "1" + ")" * 33, [1]) is None
    # nesting within the bound (32 levels) is fine
    assert countdown_value("(" * 32 + "1" + ")" * 32, [1]) == 1
    # too long
    assert countdown_value("1" + " " * 600, [1]) is None


def test_answer_in_reasoning_only_scores_zero():
    # the right expression inside <think>, nothing after
    assert verify_countdown("<think><answer>3*5+7+2</answer></think>", NUMS, TARGET) == 0.0
    # unterminated think
    assert verify_countdown("<think><answer>3*5+7+2</answer>", NUMS, TARGET) == 0.0


def test_last_answer_counts_and_boxed_fallback():
    # first answer right, last answer wrong -> 0
    assert verify_countdown("<answer>3*5+7+2</answer><answer>3+5</answer>", NUMS, TARGET) == 0.0
    # boxed fallback: 3*5+7+2 = 24
    assert verify_countdown("\\boxed{3*5+7+2}", NUMS, TARGET) == 1.0


def test_huge_answer_is_rejected_fast():
    # 1 MB of "1+" would be a long parse; the length bound rejects it immediately
    assert verify_countdown("<answer>" + "1+" * 500_000 + "1</answer>", [1], 1) == 0.0
