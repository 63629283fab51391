"""Every user mistake gets one clear block on stderr and exit 2, never a traceback (issue 13).

Each test goes through the real CLI; the message must name the field (or file:line) at fault.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.cli import PRESETS
from tests.cli.helpers import REPO, assert_user_error, rlvr, tiny_rl_config


def _toml(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_config_typo_is_one_line_naming_the_key(tmp_path):
    err = assert_user_error(rlvr("train", str(_toml(tmp_path, 'kind = "rl"\n[task]\nname = "sort"\n[optim]\nlrr = 0.1\n'))),
                            "optim.lrr", "did you mean 'optim.lr'")  # fmt: skip
    assert "rlvr train: error:" in err and "--debug" in err


def test_field_and_cross_field_problems_are_reported_together(tmp_path):
    config = _toml(tmp_path, 'kind = "rl"\n[task]\nname = "sort"\n[rollout]\ngroup_size = 1\nprompts_per_step = 3\n'
                   'temperature = -1\n[optim]\nmicro_batch_size = 2\n')  # fmt: skip
    err = assert_user_error(rlvr("train", str(config)), "rollout.temperature", "optim.micro_batch_size",
                            "rollout.group_size = 1")  # fmt: skip
    assert "3 problems" in err


def test_missing_config_file_bad_toml_and_unknown_kind(tmp_path):
    assert_user_error(rlvr("train", str(tmp_path / "nope.toml")), "nope.toml", "not found")
    assert_user_error(rlvr("train", str(_toml(tmp_path, "kind = \n"))), "not valid TOML")
    assert_user_error(rlvr("train", str(_toml(tmp_path, 'kind = "grpo"\n'))), "kind = 'grpo'", "'rl'")
    assert_user_error(rlvr("train", str(_toml(tmp_path, 'kind = "rl"\n'))), "[task]")


def test_a_shortcut_command_given_another_kind_names_rlvr_train():
    assert_user_error(rlvr("sft", str(REPO / "examples" / "tiny_grpo.toml")), "kind = 'rl'", "rlvr train")


def test_a_model_path_that_does_not_exist_names_model_path(tmp_path):
    assert_user_error(rlvr("train", str(REPO / "examples" / "tiny_grpo.toml"), cwd=tmp_path), "model.path",
                      "rlvr init-model")  # fmt: skip


def test_train_runs_an_sft_config_and_a_bad_override_names_the_form(tmp_path):
    proc = rlvr("train", str(REPO / "examples" / "tiny_sft.toml"), "--check", cwd=tmp_path)
    assert proc.returncode == 0 and "kind = 'sft'" in proc.stdout, proc.stderr[-2000:]
    assert_user_error(rlvr("train", str(REPO / "examples" / "tiny_sft.toml"), "--set", "optim.lr"),
                      "optim.lr", "section.key=value")  # fmt: skip


def test_run_out_dir_that_is_a_file_and_demo_into_a_non_empty_dir(tmp_path):
    (tmp_path / "taken").write_text("x")
    config = tiny_rl_config(tmp_path, tmp_path / "taken")
    assert_user_error(rlvr("train", str(config)), "run.out_dir", "is a file")
    assert_user_error(rlvr("demo", "--quick", "--out", str(tmp_path)), "--out", "not empty")


def test_set_key_empty_clears_model_path(tmp_path):
    proc = rlvr("train", str(REPO / "examples" / "tiny_grpo.toml"), "--set", "model.path=", "--check", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "path=null" in proc.stdout and "config OK" in proc.stdout
    assert not (tmp_path / "runs").exists()  # --check trains nothing, writes nothing


def test_an_empty_jsonl_task_file_says_the_data_is_empty(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n")
    config = tiny_rl_config(tmp_path, tmp_path / "run")
    text = config.read_text().replace('name = "sort"', 'name = "file"').replace(
        "kwargs = { length = 3, max_value = 9, n_train = 40, n_test = 8 }", f'kwargs = {{ path = "{tmp_path / "empty.jsonl"}" }}')
    config.write_text(text)
    err = assert_user_error(rlvr("train", str(config)), "empty.jsonl", "empty")
    assert "max_prompt_len" not in err


def test_n_train_zero_says_the_train_split_is_empty(tmp_path):
    config = tiny_rl_config(tmp_path, tmp_path / "run")
    err = assert_user_error(rlvr("train", str(config), "--set", "task.kwargs.n_train=0"), "train split is empty")
    assert "max_prompt_len" not in err


def test_init_model_with_an_unknown_preset_lists_the_presets(tmp_path):
    err = assert_user_error(rlvr("init-model", str(tmp_path / "m"), "--preset", "7m"), "--preset", "7m")
    assert all(p in err for p in PRESETS)


def test_init_model_into_a_non_empty_directory(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x").write_text("x")
    assert_user_error(rlvr("init-model", str(tmp_path / "m"), "--preset", "1m"), "not empty")


def test_cli_presets_match_the_model_presets():
    from rlvr.config import PRESETS as CONFIG_PRESETS
    from rlvr.models.tiny import PRESETS as MODEL_PRESETS

    assert tuple(PRESETS) == tuple(CONFIG_PRESETS) == tuple(MODEL_PRESETS)


def test_debug_and_rlvr_debug_show_the_traceback(tmp_path):
    config = _toml(tmp_path, 'kind = "rl"\n[optim]\nlrr = 1\n')
    for proc in (rlvr("train", str(config), "--debug"), rlvr("train", str(config), env={"RLVR_DEBUG": "1"})):
        assert proc.returncode != 0 and "Traceback" in proc.stderr and "optim.lrr" in proc.stderr


def test_a_bug_keeps_its_traceback(tmp_path):
    (tmp_path / "buggy.py").write_text("class Task:\n    def __init__(self):\n        raise RuntimeError('a bug')\n")
    (tmp_path / "rows.jsonl").write_text("")
    proc = rlvr("verify", str(tmp_path / "rows.jsonl"), "--task", "buggy:Task", env={"PYTHONPATH": f"{tmp_path}:{REPO}"})
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "a bug" in proc.stderr


# ------------------------------------------------------------------ rlvr verify


def test_verify_countdown_row_without_meta_numbers_names_file_line_and_field(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"completion": "<answer>5</answer>", "prompt": "p", "gold": "5", "meta": {"target": 5}}\n')
    assert_user_error(rlvr("verify", str(rows), "--task", "countdown"), f"{rows}:1", "meta.numbers")


def test_verify_empty_input_prints_valid_json(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("")
    proc = rlvr("verify", str(rows), "--task", "arithmetic", "--out", str(tmp_path / "scored.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"n": 0, "mean_reward": None, "accuracy": None, "format_rate": None}
    assert (tmp_path / "scored.jsonl").read_text() == ""


def test_verify_task_kwargs_and_per_row_output(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"completion": "a</think> <answer>3</answer>", "prompt": "1+2", "gold": "3"}\n'
                    '{"completion": "<think>a</think> <answer>4</answer>", "prompt": "1+2", "gold": "3", "prefix": ""}\n')  # fmt: skip
    out = tmp_path / "scored.jsonl"
    proc = rlvr("verify", str(rows), "--task", "arithmetic", "--task-kwargs", '{"digits": 1}', "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["line"] for r in scored] == [1, 2] and [r["parts"]["accuracy"] for r in scored] == [1.0, 0.0]
    assert json.loads(proc.stdout)["n"] == 2


@pytest.mark.parametrize(("args", "needles"), [
    (["--task", "nope"], ["--task nope", "unknown task"]),
    (["--task", "sort", "--task-kwargs", '{"lenght": 3}'], ["lenght", "length"]),
    (["--task", "sort", "--task-kwargs", "{length: 3}"], ["--task-kwargs", "not valid JSON"]),
    (["--task", "sort", "--task-kwargs", "[3]"], ["--task-kwargs", "JSON object"]),
])  # fmt: skip
def test_verify_bad_task_or_kwargs(tmp_path, args, needles):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("")
    assert_user_error(rlvr("verify", str(rows), *args), *needles)


def test_verify_missing_file_and_bad_json_line(tmp_path):
    assert_user_error(rlvr("verify", str(tmp_path / "nope.jsonl"), "--task", "sort"), "nope.jsonl", "does not exist")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"completion": "x", "example_id": "e"}\n{not json\n')
    assert_user_error(rlvr("verify", str(rows), "--task", "sort"), f"{rows}:1", "example_id")


# ------------------------------------------------------------------ rlvr eval


def test_eval_missing_model_dir_and_bad_choices(tmp_path):
    assert_user_error(rlvr("eval", "--model", str(tmp_path / "none"), "--task", "sort"), "--model", "rlvr init-model")
    assert_user_error(rlvr("eval", "--model", str(tmp_path), "--task", "sort", "--split", "dev"), "--split")
    assert_user_error(rlvr("eval", "--model", str(tmp_path), "--task", "sort", "--k", "1,x"), "--k")
    assert_user_error(rlvr("eval", "--model", str(tmp_path), "--task", "sort", "--n", "0"), "--n")


def test_eval_unknown_task_fails_before_loading_the_model(tmp_path):
    assert rlvr("init-model", str(tmp_path / "m"), "--preset", "1m").returncode == 0
    assert_user_error(rlvr("eval", "--model", str(tmp_path / "m"), "--task", "nope"), "unknown task")
    assert_user_error(rlvr("eval", "--model", str(tmp_path / "m"), "--task", "sort", "--n", "2", "--k", "1,4"),
                      "--k", "--n 2")  # fmt: skip


def test_report_on_a_missing_run_dir(tmp_path):
    proc = rlvr("report", str(tmp_path / "none"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
