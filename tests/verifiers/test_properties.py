"""Property tests: verifiers never raise on arbitrary text and return values in their documented range."""

import random
from fractions import Fraction

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlvr.verifiers import (
    extract_answer,
    tag_count_reward,
    think_answer_format,
    verify_countdown,
    verify_math,
    verify_math_batch,
)

# Text built from the pieces that matter to the parsers, plus arbitrary unicode.
PIECES = st.sampled_from(
    [
        "<think>",
        "</think>",
        "<answer>",
        "</answer>",
        "\\boxed{",
        "\\fbox{",
        "{",
        "}",
        "\\{",
        "\\}",
        "\\",
        "$",
        "=",
        ",",
        " or ",
        "|",
        "\\frac",
        "^",
        "!",
        "(",
        ")",
        "[",
        "]",
        "1",
        "22",
        "-",
        "+",
        "*",
        "/",
        " ",
        "\n",
        "x",
        "\\sqrt",
        "\\text{",
        "...",
        "π",
        "∞",
        "\x00",
    ]
)
MODEL_TEXT = st.one_of(
    st.text(max_size=200), st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=40).map("".join)
)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WORKER = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(MODEL_TEXT)
def test_extract_answer_never_raises(text):
    answer = extract_answer(text)
    # None, or a non-empty stripped string
    assert answer is None or (answer and answer == answer.strip())


@FAST
@given(MODEL_TEXT)
def test_format_rewards_in_range(text):
    assert think_answer_format(text) in (0.0, 1.0)
    assert tag_count_reward(text) in (0.0, 0.25, 0.5, 0.75, 1.0)


@FAST
@given(MODEL_TEXT, st.lists(st.integers(0, 100), min_size=1, max_size=6), st.integers(-100, 1000))
def test_verify_countdown_in_range(text, numbers, target):
    assert verify_countdown(text, numbers, target) in (0.0, 1.0)


def _random_expression(rng: random.Random, numbers: list[int]) -> tuple[str, Fraction]:
    """A random binary expression tree using each number once, and its exact value."""
    items = [(str(n), Fraction(n)) for n in numbers]
    rng.shuffle(items)
    while len(items) > 1:
        (ea, va), (eb, vb) = items.pop(), items.pop()
        op = rng.choice("+-*/" if vb != 0 else "+-*")
        value = {"+": va + vb, "-": va - vb, "*": va * vb, "/": va / vb if vb else va}[op]
        items.append((f"({ea}{op}{eb})", value))
    return items[0]


@FAST
@given(st.lists(st.integers(0, 50), min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_verify_countdown_has_no_false_negatives(numbers, rng):
    # any honest expression over the numbers that hits an integer value is accepted as that target
    expr, value = _random_expression(rng, numbers)
    if value.denominator == 1:
        assert verify_countdown(f"<think>t</think><answer>{expr}</answer>", numbers, int(value)) == 1.0
        assert verify_countdown(f"<answer>{expr}</answer>", numbers, int(value) + 1) == 0.0


@WORKER
@given(MODEL_TEXT)
def test_verify_math_in_range(text):
    # a parseable gold gives 0.0 or 1.0; an unparseable gold gives None
    assert verify_math(text, "5", timeout_s=2.0) in (0.0, 1.0)
    assert verify_math(text, "", timeout_s=2.0) is None


@WORKER
@given(st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=20))
def test_verify_math_integers_with_separators(values):
    # n matches its thousands-separated gold (1234567 vs "1,234,567"); n+1 never does
    golds = [f"{v:,}" for v in values] * 2
    completions = [f"<answer>{v}</answer>" for v in values] + [f"<answer>{v + 1}</answer>" for v in values]
    assert verify_math_batch(completions, golds) == [1.0] * len(values) + [0.0] * len(values)
