"""open_prefix, continue_layout, sft_target and grade / extract: one rule for every prompt."""

import random

import pytest

from rlvr.tasks import R1_SYSTEM_PROMPT, TEMPLATES, continue_layout, extract, grade, open_prefix, sft_target
from rlvr.tasks.arithmetic import ArithmeticTask
from rlvr.tasks.countdown import CountdownTask
from rlvr.tasks.sort import SortTask
from rlvr.types import Example, Score

EX = Example(id="a", prompt="47+85", gold="132", meta={"terms": [47, 85], "ops": ["+"]})
CHAT = "<|im_start|>user\n47+85<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize(
    "prompt, prefix",
    [
        ("47+85\n<think>", "<think>"),  # the "short" template
        (f"{R1_SYSTEM_PROMPT}\nUser: q\nAssistant: <think>", "<think>"),  # not the system prompt's tags
        ("47+85\n", ""),  # "plain"
        (CHAT, ""),  # a Qwen2-style generation prompt ends outside any tag
        (CHAT + "<think>\n", "<think>\n"),  # Qwen3's thinking mode opens the block itself
        (CHAT + "<think>  \n ", "<think>  \n "),  # whitespace is kept as the model saw it
        (CHAT + "<think>\n\n</think>\n\n", "<think>\n\n</think>\n\n"),  # Qwen3 non-thinking: think closed
        ("q <think>r</think>\n<answer>", "<think>r</think>\n<answer>"),  # answer forced after reasoning
        ("q\n<answer>", "<answer>"),
        (R1_SYSTEM_PROMPT, ""),  # ends with a complete layout (</answer>.)
        ("Put reasoning in <think> tags.\nq", ""),  # a mention, not an open block
        ("Think in <think> </think> tags.\nq", ""),
        ("", ""),
    ],
)
def test_open_prefix(prompt, prefix):
    assert open_prefix(prompt) == prefix


def test_open_prefix_matches_every_template_prefix():
    task = ArithmeticTask(n_train=5, n_test=2)
    for tpl in TEMPLATES.values():
        assert open_prefix(tpl.text.format(question="47+85", system=task.system_prompt)) == tpl.prefix


@pytest.mark.parametrize(
    "prefix, target",
    [
        ("", "<think>t</think><answer>a</answer>"),
        ("<think>", "t</think><answer>a</answer>"),
        ("<think>\n", "t</think><answer>a</answer>"),
        ("<think>\n\n</think>\n\n", "<answer>a</answer>"),
        ("<answer>", "a</answer>"),
        ("<think>r</think> <answer>", "a</answer>"),
    ],
)
def test_continue_layout_reads_as_the_full_layout(prefix, target):
    assert continue_layout("t", "a", prefix) == target
    full = prefix + target
    assert full.count("<answer>") == full.count("</answer>") == 1


TASKS = [
    ArithmeticTask(n_train=8, n_test=2),
    SortTask(n_train=8, n_test=2),
    CountdownTask(n_train=8, n_test=2, failed_attempts=1),
]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
@pytest.mark.parametrize("template", ["short", "r1", "plain"])
def test_sft_target_with_the_plain_prefix_is_the_solution(task, template):
    task.template = TEMPLATES[template]
    try:
        for ex in task.examples("train"):
            prefix = open_prefix(task.render(ex))
            got = sft_target(task, ex, prefix, random.Random(1), 0.5)
            assert got == task.solution(ex, random.Random(1), 0.5)
            assert grade(task, ex, got, prefix=prefix) == task.score(ex, got)
    finally:
        task.template = TEMPLATES["short"]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
@pytest.mark.parametrize("prefix", ["", "<think>", "<think>\n"])
def test_sft_target_after_any_prefix_grades_as_well_formed_and_right(task, prefix):
    for ex in task.examples("train"):
        target = sft_target(task, ex, prefix)
        assert grade(task, ex, target, prefix=prefix).parts == {"accuracy": 1.0, "format": 1.0}


def test_sft_target_needs_a_solution():
    class NoSolution:
        name = "bare"

        def render(self, example):
            return example.prompt

    with pytest.raises(ValueError, match=r"task 'bare' has no solution\(\)"):
        sft_target(NoSolution(), EX, "")


def test_grade_passes_the_prefix_to_verified_tasks():
    task = ArithmeticTask(n_train=5, n_test=2)
    sol = task.solution(EX)  # "7+5=12 4+8+1=13</think><answer>132</answer>"
    assert grade(task, EX, sol, prefix="<think>").parts == {"accuracy": 1.0, "format": 1.0}
    assert grade(task, EX, sol, prefix="<think>\n").parts == {"accuracy": 1.0, "format": 1.0}
    assert grade(task, EX, sol, prefix="").parts == {"accuracy": 1.0, "format": 0.0}  # no opening tag
    assert grade(task, EX, "<think>" + sol, prefix="").parts == {"accuracy": 1.0, "format": 1.0}
    assert extract(task, "x<answer>132</answer>", prefix="") == "132"
    assert extract(task, "x<answer>132</answer>", prefix="<think>") is None  # still thinking


class ProtocolOnly:
    """Implements only the protocol's score(example, completion): gets the completion as is."""

    name = "proto"

    def score(self, example, completion):
        return Score.weighted({"accuracy": float(completion == "raw")}, {})

    def extract(self, completion):
        return completion


class Forwarding(ProtocolOnly):
    """A wrapper that forwards keywords (e.g. a timing wrapper) receives the prefix."""

    def score(self, example, completion, **kw):
        return Score.weighted({"accuracy": float(kw.get("prefix") == "<think>")}, {})


def test_grade_protocol_only_and_forwarding_tasks():
    assert grade(ProtocolOnly(), EX, "raw", prefix="<think>").total == 1.0
    assert extract(ProtocolOnly(), "raw", prefix="<think>") == "raw"
    assert grade(Forwarding(), EX, "x", prefix="<think>").total == 1.0
