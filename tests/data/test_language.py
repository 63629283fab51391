"""Language-consistency reward: table-driven cases, the think-block rules, and never raising."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlvr.data.language import (
    PART,
    LanguageReward,
    WithLanguageReward,
    chain_of_thought,
    language_consistency,
    words_by_script,
)
from rlvr.types import Example, Score

CASES = [
    # (completion, target, expected)
    ("<think>Let me add the numbers first.</think><answer>5</answer>", "en", 1.0),
    ("<think>我们先把这些数字加起来。</think><answer>5</answer>", "en", 0.0),
    ("<think>我们先把这些数字加起来。</think><answer>5</answer>", "zh", 1.0),
    ("<think>Let me compute 这些数字的和 first</think>", "en", 0.4),  # 4 English words, 6 Han characters
    ("<think>Let me compute 这些数字的和 first</think>", "zh", 0.6),
    ("<think>Пусть x равно двум</think>", "ru", 1.0),  # the variable x is neutral
    ("<think>まず、数字を足します。</think>", "ja", 1.0),
    ("<think>Let $x = \\frac{1}{2}$ and π be given</think>", "en", 1.0),  # LaTeX and symbols are neutral
    ("<think>Think in English.</think><answer>答案是五</answer>", "en", 1.0),  # only the CoT counts
    ("Let me think</think><answer>5</answer>", "en", 1.0),  # the prompt opened <think>
    ("<think>one</think>between<think>two 中文</think>", "en", 0.5),  # blocks joined, text between ignored
    ("<think>unclosed reasoning in English", "en", 1.0),
    ("<think>3+5=8, 8*2=16</think>", "en", 1.0),  # no words: no_words (default 1.0)
    ("<think>   </think><answer>5</answer>", "en", 0.0),  # blank chain of thought
    ("no think block at all", "en", 0.0),
    ("", "en", 0.0),
]


@pytest.mark.parametrize(("completion", "target", "expected"), CASES)
def test_cases(completion, target, expected):
    assert language_consistency(completion, target) == pytest.approx(expected)


def test_no_words_value_and_detector_hook():
    assert language_consistency("<think>1+1=2</think>", "en", no_words=0.0) == 0.0
    labels = {"bonjour": "fr", "hello": "en"}
    det = lambda w: labels.get(w.lower())  # noqa: E731
    assert language_consistency(
        "<think>Hello bonjour bonjour 42</think>", "fr", detector=det
    ) == pytest.approx(2 / 3)
    boom = lambda w: 1 / 0  # noqa: E731
    assert language_consistency("<think>Hello</think>", "en", detector=boom) == 1.0  # failures are neutral


def test_words_and_blocks():
    assert words_by_script("café naïve Ｆｕｌｌ") == ["LATIN"] * 3
    assert chain_of_thought("x</think>y<think>z") == "x\nz"
    assert chain_of_thought(None) is None


def test_unknown_target_is_a_config_error():
    with pytest.raises(ValueError, match="unknown target language 'klingon'"):
        LanguageReward("klingon")
    assert LanguageReward("HAN")("<think>中文</think>") == 1.0


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.none(), st.integers(), st.binary()), st.sampled_from(["en", "zh", "ru"]))
def test_never_raises_and_stays_in_unit_interval(text, target):
    value = language_consistency(text, target)
    assert 0.0 <= value <= 1.0


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab 中文<>/thinkё\\$")), max_size=200))
def test_tag_soup_never_raises(text):
    assert 0.0 <= language_consistency(text, "en") <= 1.0


def test_huge_completion_is_bounded():
    assert language_consistency("<think>" + "word 中 " * 200_000, "en") == pytest.approx(0.5, abs=0.01)


class _Task:
    name, prefix = "t", "<think>"

    def score(self, example, completion, *, prefix=None):
        return Score.weighted({"accuracy": 1.0, "format": 1.0}, {"accuracy": 1.0, "format": 0.2})


def test_task_wrapper_adds_the_language_part():
    task = WithLanguageReward(_Task(), "en", weight=0.5)
    s = task.score(Example("1", "q", "5"), "我想 think</think><answer>5</answer>")
    assert s.parts[PART] == pytest.approx(1 / 3) and s.total == pytest.approx(1.2 + 0.5 / 3)
    assert task.name == "t" and task.prefix == "<think>"
