"""Runs through the real CLI stop, resume and report as users expect (issue 13): the tiny RL config
with the fake engine, a few seconds a step."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import REPO, assert_user_error, rlvr, tiny_rl_config

STEPS = 6  # > NOTHING_TO_LEARN: the fake engine's samples all score 0, so every group has zero variance


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """(config, run dir, process) of one completed 6-step run."""
    tmp = tmp_path_factory.mktemp("run")
    config = tiny_rl_config(tmp, tmp / "run", steps=STEPS)
    proc = rlvr("train", str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return config, tmp / "run", proc


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_metrics_fractions_lie_in_0_1_and_the_run_dir_has_provenance(finished):
    _, run_dir, proc = finished
    rows = _rows(run_dir)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    for row in rows:
        for key, value in row.items():
            if "frac" in key or key in ("accuracy", "reward/accuracy", "reward/format"):
                assert value is None or 0.0 <= value <= 1.0, (key, value)
    prov = json.loads((run_dir / "provenance.json").read_text())
    assert prov["rlvr_version"] and "git_commit" in prov and prov["kind"] == "rl"
    assert "Traceback" not in proc.stderr and "FutureWarning" not in proc.stderr


def test_nothing_to_learn_is_said_once(finished):
    _, _, proc = finished
    assert proc.stderr.count("nothing to learn") == 1, proc.stderr[-3000:]
    assert "groups/zero_var_frac" in proc.stderr


def test_progress_off_a_terminal_is_plain_lines(finished):
    _, _, proc = finished
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rl step ")]
    assert lines and lines[-1].startswith(f"rl step {STEPS}/{STEPS} (100%)")
    assert "\r" not in proc.stderr  # no bar redraws in a log file


def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    config = tiny_rl_config(tmp_path, tmp_path / "empty")
    assert_user_error(rlvr("train", str(config), "--resume"), "--resume", "no checkpoint", "--resume-or-start")
    assert_user_error(rlvr("train", str(config), "--force"), "--force", "--resume")


def test_a_second_run_into_a_finished_run_dir_needs_resume(finished):
    config, _, _ = finished
    assert_user_error(rlvr("train", str(config)), "already holds checkpoints", "--resume")


def test_resume_with_a_changed_lr_is_refused_field_by_field(finished):
    config, run_dir, _ = finished
    before = (run_dir / "config.json").read_text()
    err = assert_user_error(rlvr("train", str(config), "--resume", "--set", "optim.lr=1e-3",
                                 "--set", "rollout.temperature=0.5", "--set", f"run.steps={STEPS + 1}"),
                            "optim.lr: 1e-05 -> 0.001", "rollout.temperature: 1.0 -> 0.5", "--force")  # fmt: skip
    assert "run.steps:" not in err and "2 setting(s)" in err  # a longer run is not a problem
    assert (run_dir / "config.json").read_text() == before  # nothing overwritten


def test_resume_records_changes_and_force_marks_the_run_not_exact(finished, tmp_path):
    config, run_dir, _ = finished
    proc = rlvr("train", str(config), "--resume", "--set", f"run.steps={STEPS + 1}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = rlvr("train", str(config), "--resume", "--force", "--set", "optim.lr=2e-5", "--set", f"run.steps={STEPS + 2}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no longer exact" in proc.stderr and "optim.lr" in proc.stderr
    first, second = [json.loads(line) for line in (run_dir / "resumes.jsonl").read_text().splitlines()]
    assert first["step"] == STEPS and first["exact"] and first["changes"] == {"run.steps": [STEPS, STEPS + 1]}
    assert second["forced"] and not second["exact"] and second["changes"]["optim.lr"] == [1e-05, 2e-05]
    kept = [json.loads((run_dir / r["previous_config"]).read_text()) for r in (first, second)]
    assert [k["run"]["steps"] for k in kept] == [STEPS, STEPS + 1]  # history kept, never overwritten
    assert json.loads((run_dir / "config.json").read_text())["optim"]["lr"] == 2e-05
    assert [r["step"] for r in _rows(run_dir)] == list(range(1, STEPS + 3))


def test_resume_or_start_starts_fresh_where_there_is_no_checkpoint(tmp_path):
    config = tiny_rl_config(tmp_path, tmp_path / "fresh", steps=1)
    proc = rlvr("train", str(config), "--resume-or-start")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "fresh" / "checkpoints" / "step_000001").is_dir()


def _wait_for(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    t0 = time.monotonic()
    while needle not in path.read_text():
        assert proc.poll() is None, path.read_text()[-3000:]
        assert time.monotonic() - t0 < timeout, path.read_text()[-3000:]
        time.sleep(0.2)


def test_sigterm_stops_training_after_the_step_and_says_how_to_resume(tmp_path):
    config = tiny_rl_config(tmp_path, tmp_path / "run", steps=200)
    log = tmp_path / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli", "train", str(config)], stdout=subprocess.DEVNULL,
                                stderr=err, cwd=REPO)  # fmt: skip
        _wait_for(log, "rl step 1/200", proc)
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        rc = proc.wait(timeout=120)
    text = log.read_text()
    assert rc == 143 and time.monotonic() - t0 < 60, text[-3000:]
    assert "Traceback" not in text and "stopped by SIGTERM after step" in text and "--resume" in text
    saved = sorted((tmp_path / "run" / "checkpoints").iterdir())
    assert saved and saved[-1].name in text
    step = int(saved[-1].name.split("_")[1])
    proc2 = rlvr("train", str(config), "--resume", "--set", f"run.steps={step + 1}")
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert _rows(tmp_path / "run")[-1]["step"] == step + 1
