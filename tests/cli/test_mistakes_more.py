"""More CLI mistakes (red team after helper-17): each through the real CLI, exit 2, no traceback, the key or
file named as the user wrote it."""

from __future__ import annotations

from pathlib import Path

from tests.cli.helpers import assert_user_error, rlvr, tiny_rl_config

MIXTURE = 'kind = "rl"\n[[tasks]]\nname = "sort"\n[[tasks]]\nname = "countdown"\nwieght = 2\n'


def test_a_one_task_config_is_named_task_not_tasks_0(tmp_path):
    config = tiny_rl_config(tmp_path, tmp_path / "run")
    err = assert_user_error(rlvr("train", str(config), "--check", "--set", "task=sort"), "config key 'task'", "'sort'")
    assert "tasks" not in err and "at least 1 item" not in err  # no second, derived problem
    assert_user_error(rlvr("train", str(config), "--check", "--set", "task.kwarg.length=3"),
                      "unknown config key 'task.kwarg'", "did you mean 'task.kwargs'", "valid keys here: kwargs")  # fmt: skip


def test_a_mixture_row_is_named_by_its_index_and_set_says_it_cannot_reach_it(tmp_path):
    config = tmp_path / "mix.toml"
    config.write_text(MIXTURE)
    assert_user_error(rlvr("train", str(config), "--check"), "'tasks.1.wieght'", "did you mean 'tasks.1.weight'")
    config.write_text(MIXTURE.replace("wieght", "weight"))
    assert_user_error(rlvr("train", str(config), "--check", "--set", "tasks.1.kwargs.n_numbers=3"),
                      "tasks is a list of tables", "edit that row in the config file")  # fmt: skip


def test_an_empty_out_dir_or_a_duplicate_toml_key_is_named(tmp_path):
    config = tiny_rl_config(tmp_path, tmp_path / "run")
    assert_user_error(rlvr("train", str(config), "--check", "--set", 'run.out_dir=""'), "run.out_dir", "is empty")
    dup = tmp_path / "dup.toml"
    dup.write_text('kind = "rl"\n[run]\nsteps = 1\nsteps = 2\n')
    assert_user_error(rlvr("train", str(dup), "--check"), "dup.toml", "line 4", "not valid TOML")


def test_resume_forced_onto_a_model_of_another_shape_names_the_checkpoint(tmp_path):
    config: Path = tiny_rl_config(tmp_path, tmp_path / "run", steps=1)
    proc = rlvr("train", str(config))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_user_error(rlvr("train", str(config), "--resume", "--force", "--set", "model.preset=5m", "--set", "run.steps=2"),
                      "step_000001 holds a model of another shape", "model.preset")  # fmt: skip
    assert not (tmp_path / "run" / "resumes.jsonl").exists()  # nothing recorded for a resume that did not happen


def test_resume_from_a_trainer_state_another_version_wrote_names_the_checkpoint_and_versions(tmp_path):
    # a trainer_state.pt without an entry this rlvr reads (an older or newer rlvr wrote it): exit 2,
    # naming the checkpoint, the missing entry and both versions; before, a KeyError traceback
    import torch

    config: Path = tiny_rl_config(tmp_path, tmp_path / "run", steps=1)
    assert rlvr("train", str(config)).returncode == 0
    state_file = tmp_path / "run" / "checkpoints" / "step_000001" / "trainer_state.pt"
    state = torch.load(state_file, weights_only=False)
    del state["optimizer"]
    torch.save(state, state_file)
    assert_user_error(rlvr("train", str(config), "--resume", "--set", "run.steps=2"),
                      "step_000001", "trainer_state.pt", "'optimizer'", "written by rlvr")  # fmt: skip
