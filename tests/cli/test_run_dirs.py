"""Where `rlvr train` may start a run: a new or empty folder, or one left by a run stopped before its first
step; never a folder of the user's other files or a run it would overwrite.  A crash mid-checkpoint leaves
a `.step_N.tmp-*` temporary that the next run or resume ignores and deletes (only rlvr's own names)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import REPO, assert_user_error, rlvr, tiny_rl_config, wait_for


def _ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, (proc.stdout + proc.stderr)[-3000:]


def test_a_folder_of_other_files_is_refused_and_left_as_it_was(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    (out / "metrics.jsonl").write_text('{"my": "numbers"}\n')
    before = {p.name: p.read_text() for p in out.iterdir()}
    config = tiny_rl_config(tmp_path, out, steps=1)
    for extra in ([], ["--resume-or-start"]):
        assert_user_error(rlvr("train", str(config), *extra), "run.out_dir", str(out), "not an rlvr run directory",
                          "notes.txt", "new or empty directory", "--resume")  # fmt: skip
    assert {p.name: p.read_text() for p in out.iterdir()} == before  # nothing written, nothing truncated


def test_a_run_with_logged_steps_but_no_checkpoint_is_not_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": 0.5}\n')
    config = tiny_rl_config(tmp_path, out, steps=1)
    assert_user_error(rlvr("train", str(config)), "logged 2 step(s)", "saved no checkpoint", "new directory")
    assert (out / "metrics.jsonl").read_text().count("step") == 2


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("finished")
    _ok(rlvr("train", str(tiny_rl_config(tmp, tmp / "run", steps=1))))
    return tmp / "run"


def test_a_finished_run_needs_resume_and_a_stale_checkpoint_temp_is_cleaned(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    config = tiny_rl_config(tmp_path, run, steps=2)
    assert_user_error(rlvr("train", str(config)), "already holds checkpoints", "--resume")
    stale = run / "checkpoints" / ".step_000002.tmp-k3x9_q1z"  # what a crash inside save_checkpoint leaves
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    (run / ".config.ab12cd.json").write_text("{")  # save_config's temporary
    (run / "checkpoints" / ".step_notes").write_text("not rlvr's temporary name: kept")
    _ok(rlvr("train", str(config), "--resume"))
    assert not stale.exists() and not (run / ".config.ab12cd.json").exists()
    assert (run / "checkpoints" / ".step_notes").is_file()
    assert [p.name for p in sorted((run / "checkpoints").glob("step_*"))][-1] == "step_000002"


def test_a_folder_left_by_a_start_that_was_stopped_takes_a_new_run(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")  # stopped after writing its config, before step 1
    (out / "provenance.json").write_text("{}")
    (out / "metrics.jsonl").write_text("")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / ".step_000001.tmp-abcd1234").mkdir()
    (out / "sft").mkdir()  # a stage's run beside it: `rlvr demo` runs SFT in OUT/sft, then GRPO in OUT
    (out / "sft" / "config.json").write_text("{}")
    _ok(rlvr("train", str(tiny_rl_config(tmp_path, out, steps=1))))
    assert (out / "sft" / "config.json").read_text() == "{}"
    assert (out / "checkpoints" / "step_000001").is_dir() and not (out / "checkpoints" / ".step_000001.tmp-abcd1234").exists()


def _start(config: Path, log: Path, *extra: str) -> subprocess.Popen:
    """`rlvr train` in the background; unbuffered, so "resolved config" is in the log when it is printed."""
    env = {k: v for k, v in os.environ.items() if k != "RLVR_DEBUG"} | {"PYTHONUNBUFFERED": "1"}
    with log.open("w") as err:
        return subprocess.Popen([sys.executable, "-m", "rlvr.cli", "train", str(config), *extra], stdout=err,
                                stderr=err, cwd=REPO, env=env)  # fmt: skip


def test_ctrl_c_at_startup_leaves_no_folder_behind(tmp_path):
    out, log = tmp_path / "run", tmp_path / "log.txt"
    config = tiny_rl_config(tmp_path, out, steps=400)
    proc = _start(config, log)
    wait_for(log, "resolved config", proc)
    proc.send_signal(signal.SIGINT)  # while the model and the engine are being built
    rc = proc.wait(timeout=120)
    text = log.read_text()
    assert rc == 130 and "Traceback" not in text, text[-3000:]
    if not (out / "checkpoints").is_dir():  # stopped before step 1 (a loaded machine may finish it first)
        assert not out.exists(), list(out.iterdir())


def test_sigkill_mid_run_then_resume_ignores_and_cleans_the_half_written_checkpoint(tmp_path):
    out, log = tmp_path / "run", tmp_path / "log.txt"
    config = tiny_rl_config(tmp_path, out, steps=40)
    proc = _start(config, log, "--set", "run.save_every=1")
    t0 = time.monotonic()
    while not list((out / "checkpoints").glob("step_*")) and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.02)
    proc.kill()  # no handler runs: whatever it was writing stays half-written
    proc.wait(timeout=60)
    (out / "checkpoints" / ".step_000099.tmp-zz99yy88").mkdir()  # as a kill inside save_checkpoint leaves it
    _ok(rlvr("train", str(config), "--set", "run.save_every=1", "--set", "run.steps=3", "--resume"))
    assert not list((out / "checkpoints").glob(".step_*"))
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 3, steps  # no gap, no repeat
    assert json.loads((out / "resumes.jsonl").read_text().splitlines()[-1])["exact"]
