"""Answer-region and extraction rules (rlvr.verifiers.region): only the final answer is graded."""

import time

import pytest

from rlvr.verifiers.region import answer_region, clip_tail, extract_answer, last_boxed

EXTRACT_CASES = [
    # plain R1 layout: the answer block's content, stripped
    ("<think>2+2</think><answer> 4 </answer>", "4"),
    # no think tags at all: the whole text is the region
    ("<answer>4</answer>", "4"),
    # several answer blocks after the think: two final answers (a hedge), none is graded
    ("<think>r</think><answer>3</answer><answer>4</answer>", None),
    # answer hidden in the reasoning only: nothing after </think> -> no answer
    ("<think>so <answer>4</answer></think>", None),
    # answer in the reasoning AND a different one after: only the region's answer counts
    ("<think><answer>3</answer></think><answer>4</answer>", "4"),
    # unterminated think: the model never finished reasoning -> no answer even with an answer tag
    ("<think>reasoning <answer>4</answer>", None),
    # a second think opened after the first closed and left open -> unterminated
    ("<think>a</think><think>b <answer>4</answer>", None),
    # R1 chat templates put <think> in the prompt: a lone </think> still delimits the region
    ("reasoning</think><answer>4</answer>", "4"),
    # empty answer block is no answer, and we do not fall back to a box then
    ("<think>r</think><answer>  </answer> \\boxed{4}", None),
    # no answer block: the last \boxed of the region
    ("<think>\\boxed{1}</think> first \\boxed{2} then \\boxed{3}", "3"),
    # boxes inside the think are ignored
    ("<think>\\boxed{1}</think> done", None),
    # nested braces inside the box
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
    # \fbox works like \boxed
    ("\\fbox{7}", "7"),
    # escaped braces are literal characters, not groups
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
    # the last box is truncated: strict, no fallback to the earlier box
    ("\\boxed{3} and \\boxed{4", None),
    # empty box is no answer
    ("\\boxed{ }", None),
    # a single box filling the answer block is unwrapped (also with $ and a period)
    ("<answer>$\\boxed{5}$.</answer>", "5"),
    # two boxes in the answer block stay as they are (the math verifier sees a hedge)
    ("<answer>\\boxed{3} \\boxed{4}</answer>", "\\boxed{3} \\boxed{4}"),
    # a box followed by more text is not unwrapped
    ("<answer>\\boxed{3} + 1</answer>", "\\boxed{3} + 1"),
    # an unterminated answer tag falls back to the last box
    ("<answer>4 \\boxed{5}", "5"),
    # unicode content is kept verbatim
    ("<answer>π/2 ≈ 1.57</answer>", "π/2 ≈ 1.57"),
    # no answer at all
    ("I don't know", None),
    # empty completion
    ("", None),
]


@pytest.mark.parametrize(("completion", "expected"), EXTRACT_CASES)
def test_extract_answer(completion, expected):
    assert extract_answer(completion) == expected


def test_answer_region_cases():
    # text after the LAST </think>
    assert answer_region("<think>a</think>b</think>c") == "c"
    # no tags: whole text
    assert answer_region("abc") == "abc"
    # open without close: None
    assert answer_region("<think>abc") is None
    # non-string input never raises
    assert answer_region(None) is None  # type: ignore[arg-type]


def test_clip_tail_keeps_the_end():
    # 10 chars clipped to the last 4
    assert clip_tail("0123456789", 4) == "6789"
    # shorter text unchanged
    assert clip_tail("abc", 4) == "abc"
    # non-positive limit and non-str input give ""
    assert clip_tail("abc", 0) == ""
    assert clip_tail(None) == ""  # type: ignore[arg-type]


def test_last_boxed_picks_the_last_one():
    # two boxes: the second one's content
    assert last_boxed("\\boxed{1} \\boxed{22}") == "22"
    # \boxed with a space before the brace
    assert last_boxed("\\boxed {8}") == "8"
    # \boxed without a brace group is malformed
    assert last_boxed("\\boxed 8") is None


@pytest.mark.parametrize(
    "completion",
    [
        # 1 MB of reasoning then the answer: the answer survives clipping
        "<think>" + "x" * 1_000_000 + "</think><answer>4</answer>",
        # 1 MB of nested open braces inside a box: linear scan, returns None
        "\\boxed" + "{" * 1_000_000,
        # 1 MB of tags
        "<answer>" * 125_000,
        # 1 MB of backslashes and braces
        "\\boxed{" + "\\{" * 500_000,
    ],
)
def test_huge_inputs_are_fast(completion):
    start = time.perf_counter()
    extract_answer(completion)
    assert time.perf_counter() - start < 0.5


def test_huge_reasoning_keeps_answer():
    # the answer after 1 MB of reasoning is still found (tag search runs on the full text)
    assert extract_answer("<think>" + "x" * 1_000_000 + "</think><answer>4</answer>") == "4"
    # 1 MB unterminated think with an answer at the very end is still unterminated
    assert extract_answer("<think>" + "x" * 1_000_000 + "<answer>4</answer>") is None
