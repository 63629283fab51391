"""Strict R1 format reward and the partial tag-count reward (rlvr.verifiers.format)."""

import pytest

from rlvr.verifiers.format import tag_count_reward, think_answer_format

FORMAT_CASES = [
    # the canonical layout
    ("<think>r</think><answer>4</answer>", 1.0),
    # whitespace before, between and after the blocks is allowed
    ("\n <think>\nr\n</think>\n\n<answer>\n4\n</answer>\n", 1.0),
    # prose before <think> is not R1 format
    ("Sure! <think>r</think><answer>4</answer>", 0.0),
    # prose between the blocks
    ("<think>r</think> so <answer>4</answer>", 0.0),
    # prose after </answer> (e.g. a second try)
    ("<think>r</think><answer>4</answer> or 5", 0.0),
    # empty think
    ("<think> </think><answer>4</answer>", 0.0),
    # empty answer
    ("<think>r</think><answer>\n</answer>", 0.0),
    # two answer blocks (tag counting, a permissive regex would accept the first)
    ("<think>r</think><answer>4</answer><answer>5</answer>", 0.0),
    # two think blocks
    ("<think>a</think><think>b</think><answer>4</answer>", 0.0),
    # answer before think
    ("<answer>4</answer><think>r</think>", 0.0),
    # an answer tag nested in the think
    ("<think>r<answer>4</answer></think>", 0.0),
    # unterminated think
    ("<think>r <answer>4</answer>", 0.0),
    # closing tag before opening tag
    ("</think>r<think><answer>4</answer>", 0.0),
    # missing <think> (prompt-side think tag) is not the full layout
    ("r</think><answer>4</answer>", 0.0),
    # unicode inside blocks is fine
    ("<think>∑ π</think><answer>√2</answer>", 1.0),
    # empty string
    ("", 0.0),
]


@pytest.mark.parametrize(("completion", "expected"), FORMAT_CASES)
def test_think_answer_format(completion, expected):
    assert think_answer_format(completion) == expected


TAG_CASES = [
    # all four tags exactly once: 4 x 0.25
    ("<think>r</think><answer>4</answer>", 1.0),
    # only the think pair: 2 x 0.25
    ("<think>r</think> 4", 0.5),
    # <answer> twice earns nothing for that tag: 3 x 0.25
    ("<think>r</think><answer><answer>4</answer>", 0.75),
    # no tags
    ("4", 0.0),
    # tag count ignores order: all four once, reversed, still 1.0 (shaping reward, not the strict one)
    ("</answer><answer></think><think>", 1.0),
]


@pytest.mark.parametrize(("completion", "expected"), TAG_CASES)
def test_tag_count_reward(completion, expected):
    assert tag_count_reward(completion) == expected


def test_non_string_inputs_score_zero():
    assert think_answer_format(None) == 0.0  # type: ignore[arg-type]
    assert tag_count_reward(b"<think>") == 0.0  # type: ignore[arg-type]
