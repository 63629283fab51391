"""Task kwargs of the wrong type or out of range, through the real CLI: exit 2, no traceback, and the key
named as the user wrote it (`task.kwargs.length`, `tasks.1.kwargs.length`, `--task-kwargs length`).

The sweep feeds every keyword of every built-in task (`rlvr.tasks.TASKS`) each value of `VALUES`, the way a
user types it after `--set` (or as JSON for `--task-kwargs`); each run must either pass (the value is one
the parameter takes, e.g. "3" for an int, as every config key takes it) or fail as a user error naming the
key.  It runs `rlvr.cli.main` in-process (a subprocess per case would take minutes); the subprocess tests
below check the same paths end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.cli import main
from rlvr.tasks import TASKS
from rlvr.tasks import _parameters as parameters
from tests.cli.helpers import assert_user_error, rlvr, tiny_rl_config

# (what follows `--set task.kwargs.NAME=`, the same value as JSON for --task-kwargs)
VALUES = [("abc", '"abc"'), ('"3"', '"3"'), ("2.5", "2.5"), ("3.0", "3.0"), ("true", "true"), ("", "null"),
          ("[3]", "[3]"), ("{ a = 1 }", '{"a": 1}'), ("-1", "-1"), ("0", "0"), ('""', '""')]  # fmt: skip
# values each parameter's type refuses for sure (a check that lets one through fails the test)
REFUSED = {int: ["abc", "2.5", "true", "", "[3]", "{ a = 1 }"], float: ["abc", "true", "", "[3]"],
           str: ["2.5", "true", "", "[3]"]}  # fmt: skip
ROWS = '{"question": "1+1", "answer": "2"}\n{"question": "2+2", "answer": "4"}\n'


def _cases() -> list[tuple[str, str]]:
    return [(task, name) for task, factory in TASKS.items() for name in parameters(factory)]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("kwargs")
    (tmp / "rows.jsonl").write_text(ROWS)
    (tmp / "empty.jsonl").write_text("")
    config = tiny_rl_config(tmp, tmp / "run")
    config.write_text(config.read_text().replace("kwargs = { length = 3, max_value = 9, n_train = 40, n_test = 8 }",
                                                 "kwargs = {}"))  # fmt: skip
    return {"config": config, "rows": tmp / "rows.jsonl", "empty": tmp / "empty.jsonl", "tmp": tmp}


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def _base(task: str, files: dict[str, Path], name: str) -> list[str]:
    """--set lines that make `task` the config's task (a file task gets a real file unless `path` is swept)."""
    sets = [f"task.name={task}"]
    if task == "file" and name != "path":
        sets.append(f"task.kwargs.path={files['rows'].as_posix()}")
    return [x for s in sets for x in ("--set", s)]


def _expect_refused(task: str, name: str, text: str) -> bool:
    hint = parameters(TASKS[task])[name][1]
    return text in REFUSED.get(hint, [])


@pytest.mark.parametrize(("task", "name"), _cases())
def test_every_kwarg_of_every_task_takes_a_value_or_names_the_key(capsys, files, task, name):
    for text, as_json in VALUES:
        argv = ["train", str(files["config"]), "--check", *_base(task, files, name), "--set", f"task.kwargs.{name}={text}"]
        code, out = _run(capsys, argv)
        assert code in (0, 2) and "Traceback" not in out, (name, text, out[-3000:])
        if code == 2:  # a file task's field that the rows lack: the row reader says `set answer_field=`
            assert f"task.kwargs.{name}" in out or f"set {name}=" in out, (name, text, out[-2000:])
        assert code == 2 or not _expect_refused(task, name, text), (name, text, "accepted", out[-1500:])
        kwargs = json.loads(f'{{"{name}": {as_json}}}')
        if task == "file" and name != "path":
            kwargs["path"] = str(files["rows"])
        code, out = _run(capsys, ["verify", str(files["empty"]), "--task", task, "--task-kwargs", json.dumps(kwargs)])
        assert code in (0, 2) and "Traceback" not in out, (name, as_json, out[-3000:])
        if code == 2:
            assert f"--task-kwargs {name}" in out or f"set {name}=" in out, (name, as_json, out[-2000:])


def test_the_sweep_covers_every_task_and_refuses_the_obvious_slips():
    assert {task for task, _ in _cases()} == set(TASKS)
    for task, factory in TASKS.items():
        assert {"seed", "n_train", "template", "weights"} <= set(parameters(factory)) or task == "file"


# ------------------------------------------------------------------ end to end, one subprocess per path


def test_a_string_where_an_int_goes_in_toml_and_on_the_command_line(tmp_path):
    config = tiny_rl_config(tmp_path, tmp_path / "run")
    err = assert_user_error(rlvr("train", str(config), "--check", "--set", "task.kwargs.length=abc"),
                            "task.kwargs.length", "'abc'", "integer")  # fmt: skip
    assert "not supported between" not in err
    config.write_text(config.read_text().replace("length = 3", 'length = "3"'))  # TOML "3": taken as 3, like any key
    proc = rlvr("train", str(config), "--check")
    assert proc.returncode == 0 and "config OK" in proc.stdout, proc.stderr[-2000:]


def test_a_mixture_names_the_row_whose_kwarg_is_wrong(tmp_path):
    config = tmp_path / "mix.toml"
    body = tiny_rl_config(tmp_path, tmp_path / "run").read_text()
    _, _, rest = body.partition("[model]")
    mixture = ('kind = "rl"\n[[tasks]]\nname = "sort"\nkwargs = { length = 3, max_value = 9 }\n'
               '[[tasks]]\nname = "countdown"\nkwargs = { n_numbers = 9 }\n')  # fmt: skip
    config.write_text(mixture + "[model]" + rest)
    assert_user_error(rlvr("train", str(config), "--check"), "tasks.1.kwargs.n_numbers", "2 <= n_numbers <= 6", "9")


def test_eval_names_the_task_kwargs_key(tmp_path):
    model = tmp_path / "m"
    assert rlvr("init-model", str(model), "--preset", "1m").returncode == 0
    assert_user_error(rlvr("eval", "--model", str(model), "--task", "countdown", "--task-kwargs", '{"max_number": [20]}'),
                      "--task-kwargs max_number", "[20]")  # fmt: skip


def test_a_negative_count_or_a_bad_range_is_named(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("")
    assert_user_error(rlvr("verify", str(rows), "--task", "sort", "--task-kwargs", '{"n_test": -5}'),
                      "--task-kwargs n_test", ">= 0", "-5")  # fmt: skip
    assert_user_error(rlvr("verify", str(rows), "--task", "sort", "--task-kwargs", '{"length": 5, "max_value": 2}'),
                      "--task-kwargs max_value", "max_value >= length - 1 = 4")  # fmt: skip
