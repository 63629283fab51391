"""Templates, the completion prefix, weights and the task registry."""

import pytest

from rlvr.tasks import R1_SYSTEM_PROMPT, TASKS, Task, make_task, make_task_with
from rlvr.tasks.arithmetic import ArithmeticTask
from rlvr.tasks.sort import SortTask
from rlvr.types import Example

# 47+85: 7+5=12 (write 2, carry 1), 4+8+1=13 -> 132
EX = Example(id="a", prompt="47+85", gold="132", meta={"terms": [47, 85], "ops": ["+"]})


def small(**kw):
    return ArithmeticTask(n_train=20, n_test=5, **kw)


def test_short_template_ends_inside_think_and_solution_continues_it():
    task = small()
    assert task.render(EX) == "47+85\n<think>"
    assert task.prefix == "<think>"
    sol = task.solution(EX)
    assert sol == "7+5=12 4+8+1=13</think><answer>132</answer>"
    assert task.score(EX, sol).parts == {"accuracy": 1.0, "format": 1.0}


def test_prefix_is_prepended_before_grading():
    task = small()
    full = "<think>" + task.solution(EX)
    # The model re-opening <think> after a prompt that already opened it is two think tags: format 0.
    assert task.score(EX, full).parts == {"accuracy": 1.0, "format": 0.0}
    # The same text graded as a chat-template completion (no prefix) is well formed.
    assert task.score(EX, full, prefix="").parts == {"accuracy": 1.0, "format": 1.0}
    # An answer written while the prompt's think block is still open is not graded.
    assert task.extract("I think <answer>132</answer>") is None
    assert task.score(EX, "I think <answer>132</answer>").parts == {"accuracy": 0.0, "format": 0.0}
    assert task.extract("I think <answer>132</answer>", prefix="") == "132"


def test_plain_template_solution_is_the_full_r1_layout():
    task = small(template="plain")
    assert task.render(EX) == "47+85\n"
    assert task.prefix == ""
    sol = task.solution(EX)
    assert sol.startswith("<think>") and sol.endswith("</answer>")
    assert task.score(EX, sol).total == pytest.approx(1.2)


def test_r1_template_and_messages():
    task = small(template="r1")
    assert task.render(EX) == f"{R1_SYSTEM_PROMPT}\nUser: 47+85\nAssistant: <think>"
    assert task.messages(EX) == [
        {"role": "system", "content": R1_SYSTEM_PROMPT},
        {"role": "user", "content": "47+85"},
    ]


def test_weights_default_and_override():
    sol = small().solution(EX)
    wrong = sol.replace("<answer>132", "<answer>133")
    # default: 1.0 * accuracy + 0.2 * format
    assert small().score(EX, wrong).total == pytest.approx(0.2)
    assert small(weights={"format": 0.0}).score(EX, sol).total == pytest.approx(1.0)
    assert small(weights={"accuracy": 2.0}).score(EX, sol).total == pytest.approx(2.2)
    with pytest.raises(
        ValueError, match=r"unknown reward part 'length' in weights: the parts are \['accuracy', 'format'\]"
    ):
        small(weights={"length": 1.0})


def test_unknown_template():
    with pytest.raises(
        ValueError, match=r"unknown template 'chatml': choose one of \['plain', 'r1', 'short'\]"
    ):
        small(template="chatml")


def test_score_never_raises_on_junk():
    task = small()
    for junk in ["", "</think>", "<answer></answer>" * 3, "\x00" * 10, None]:
        assert task.score(EX, junk).parts["accuracy"] == 0.0


def test_registry_builds_every_task_and_checks_kwargs():
    assert set(TASKS) >= {"arithmetic", "countdown", "sort", "file"}
    task = make_task("arithmetic", digits=1, n_train=10, n_test=2, seed=3)
    assert isinstance(task, Task) and task.digits == 1 and task.seed == 3
    assert isinstance(make_task("countdown", n_train=5, n_test=2), Task)
    with pytest.raises(
        ValueError,
        match=r"unknown task 'arith': valid names are \['arithmetic', 'countdown', 'file', 'sort'\]",
    ):
        make_task("arith")
    with pytest.raises(
        ValueError, match=r"task 'arithmetic' does not accept \['digitz'\]: valid options are \[.*'digits'"
    ):
        make_task("arithmetic", digitz=3)
    with pytest.raises(
        ValueError, match=r"kwargs.path: is required and missing: add it to the task's kwargs \(task 'file'\)"
    ):
        make_task("file")
    # inherited knobs (seed, template, weights) count as valid
    with pytest.raises(
        ValueError,
        match=r"'n_terms', 'n_test', 'n_train', 'ops', 'seed', 'system_prompt', 'template', 'test_fraction', 'weights'",
    ):
        make_task("arithmetic", bogus=1)


def test_registry_checks_each_kwarg_against_its_annotation():
    from rlvr.errors import TaskKwargError, UserError

    assert make_task("sort", length="3", max_value=9.0).length == 3  # as a config key takes "3" and 9.0
    for kwargs, needle in [
        ({"length": "abc"}, r"kwargs.length: got 'abc' \(str\): input should be a valid integer"),
        ({"length": 2.5}, r"kwargs.length: got 2.5 .*fractional part"),
        ({"length": True}, r"kwargs.length: got True, a boolean, where a number is needed \(expected int; default 4\)"),
        ({"length": None}, r"kwargs.length: got None"),
        ({"max_value": [9]}, r"kwargs.max_value: got \[9\] \(list\)"),
        ({"n_train": -1}, r"kwargs.n_train: n_train is a number of problems, >= 0; got -1"),
        ({"test_fraction": "x"}, r"kwargs.test_fraction: got 'x'.*valid number"),
        ({"weights": {"format": "x"}}, r"kwargs.weights: .*weights\['format'\]: input should be a valid number"),
        ({"template": 3}, r"kwargs.template: got 3 \(int\).*expected str \| Template"),
    ]:
        with pytest.raises(TaskKwargError, match=needle) as info:
            make_task("sort", **kwargs)
        assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
    with pytest.raises(TaskKwargError, match=r"^tasks.1.kwargs.ops: arithmetic needs ops from"):
        make_task_with("arithmetic", {"ops": "^"}, where="tasks.1.kwargs.{}")


def test_registry_escape_hatch():
    task = make_task("rlvr.tasks.sort:SortTask", length=3, n_train=5, n_test=2)
    assert isinstance(task, SortTask) and task.length == 3
    with pytest.raises(
        ValueError, match=r"cannot load task 'no_such_mod:Task'.*'package.module:ClassOrFactory'"
    ):
        make_task("no_such_mod:Task")
    with pytest.raises(ValueError, match=r"built a dict, which does not implement the Task protocol"):
        make_task("builtins:dict")
