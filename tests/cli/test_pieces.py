"""The pieces behind the CLI's behaviour, in process: resume diffs, the logger's nulls and plain-line
progress, the nothing-to-learn rule, exit codes, and the narrow warning filter."""

from __future__ import annotations

import json
import warnings

import pytest

from rlvr.config import ConfigError, parse_config
from rlvr.errors import MissingPathError, RunDirError, Stopped, UserError
from rlvr.trainer import driver
from rlvr.trainer.logging import LineProgress, RunLogger, quiet_third_party
from rlvr.trainer.resume import Resume, check_config, config_changes, flatten, record_resume


def test_errors_are_user_errors_and_keep_their_builtin_types():
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(RunDirError, FileExistsError) and issubclass(MissingPathError, FileNotFoundError)
    from rlvr.tasks.files import DatasetError

    assert issubclass(DatasetError, UserError) and issubclass(DatasetError, ValueError)
    assert Stopped("SIGINT").exit_code == 130 and Stopped("SIGTERM").exit_code == 143
    assert isinstance(Stopped("SIGTERM"), KeyboardInterrupt)


def test_flatten_and_changes_name_each_leaf():
    old = {"optim": {"lr": 1e-5, "betas": [0.9, 0.99]}, "tasks": [{"name": "sort", "kwargs": {"length": 3}}]}
    new = {"optim": {"lr": 1e-4, "betas": [0.9, 0.99]}, "tasks": [{"name": "sort", "kwargs": {"length": 4}}]}
    assert flatten(old)["tasks.0.kwargs.length"] == 3 and flatten(old)["optim.betas"] == [0.9, 0.99]
    assert config_changes(old, new) == {"optim.lr": (1e-5, 1e-4), "tasks.0.kwargs.length": (3, 4)}


def _rl(**run):
    return parse_config({"kind": "rl", "task": {"name": "sort"}, "run": {"out_dir": "x", **run}})


def test_check_config_allows_cadence_refuses_the_rest_unless_forced(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(_rl(steps=10).model_dump(mode="json")))
    longer = _rl(steps=20, eval_every=5, threads=1).model_dump(mode="json")
    assert set(check_config(tmp_path, longer, Resume())) == {"run.steps", "run.eval_every", "run.threads"}
    other_seed = _rl(steps=10, seed=3).model_dump(mode="json")
    with pytest.raises(ConfigError, match=r"run.seed: 0 -> 3") as err:
        check_config(tmp_path, other_seed, Resume())
    assert err.value.problems == ["run.seed: 0 -> 3"]
    assert check_config(tmp_path, other_seed, Resume(force=True)) == {"run.seed": (0, 3)}


def test_record_resume_keeps_history_and_world_size_marks_not_exact(tmp_path):
    (tmp_path / "config.json").write_text('{"run": {"steps": 10}}')
    row = record_resume(tmp_path, 4, {"run.steps": (10, 20)}, forced=False, world_sizes=(1, 1))
    assert row["exact"] and (tmp_path / row["previous_config"]).read_text() == '{"run": {"steps": 10}}'
    row = record_resume(tmp_path, 8, {}, forced=False, world_sizes=(1, 2))
    assert not row["exact"] and "previous_config" not in row and row["world_size"] == [1, 2]
    row = record_resume(tmp_path, 9, {}, forced=False, world_sizes=(2, 2))
    assert not row["exact"]  # once not exact, always not exact
    assert len((tmp_path / "resumes.jsonl").read_text().splitlines()) == 3


def test_logger_writes_null_for_a_metric_with_no_data(tmp_path):
    logger = RunLogger(tmp_path, stage="rl", total_steps=3, progress=False, tensorboard=False)
    logger.log(1, {"loss": 0.5, "kl": 0.1, "eval/pass@1": 0.2, "time/step": 1.0})
    logger.log(2, {"kl": float("nan")})
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[1] == {"step": 2, "loss": None, "kl": None}  # eval/* and time/* are not carried over


def test_line_progress_prints_first_last_and_every_n_seconds(capsys):
    bar = LineProgress("rl", total=100, every=3600)
    for _ in range(100):
        bar.set_postfix({"reward": "0.5"})
        bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("rl step 1/100 (1%) reward 0.5 |")
    assert lines[1].startswith("rl step 100/100 (100%)") and "left" not in lines[1]


@pytest.mark.parametrize(("metrics", "idle"), [
    ({"groups/zero_var_frac": 1.0, "grad_norm": 0.3}, True),
    ({"groups/zero_var_frac": 0.5, "grad_norm": 0.0}, True),
    ({"groups/zero_var_frac": 0.5, "grad_norm": 0.3}, False),
    ({"grad_norm": 0.0, "skipped": 1}, False),
    ({"loss": 1.0}, False),
])  # fmt: skip
def test_nothing_to_learn_rule(metrics, idle):
    assert driver._nothing_to_learn(metrics) is idle


def test_quiet_third_party_drops_only_the_past_key_values_notice():
    quiet_third_party()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_third_party()  # re-installs its filter in this block
        warnings.warn("`past_key_values` is deprecated and will be removed", FutureWarning, stacklevel=1)
        warnings.warn("something else", FutureWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]
