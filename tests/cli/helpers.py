"""Running the real `rlvr` command line in a subprocess, and what a user error must look like."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def rlvr(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:  # fmt: skip
    """`python -m rlvr.cli ARGS` with output captured (RLVR_DEBUG cleared unless `env` sets it)."""
    full_env = {k: v for k, v in os.environ.items() if k != "RLVR_DEBUG"} | {"PYTHONPATH": str(REPO)} | (env or {})
    return subprocess.run([sys.executable, "-m", "rlvr.cli", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, check=False)  # fmt: skip


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, no traceback anywhere, and every needle in stderr; returns stderr."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{out[-3000:]}"
    assert "Traceback" not in out, out[-3000:]
    for needle in needles:
        assert needle in proc.stderr, f"{needle!r} not in stderr:\n{proc.stderr[-3000:]}"
    return proc.stderr


TINY_RL = """\
kind = "rl"
[task]
name = "sort"
kwargs = {{ length = 3, max_value = 9, n_train = 40, n_test = 8 }}
[model]
preset = "1m"
[rollout]
group_size = 2
prompts_per_step = 2
max_new_tokens = 6
[rollout.engine]
type = "fake"
[optim]
micro_batch_size = 4
[run]
out_dir = "{out}"
steps = {steps}
tensorboard = false
threads = 1
"""


def tiny_rl_config(tmp_path: Path, out: Path, steps: int = 3, name: str = "rl.toml") -> Path:
    """A kind = "rl" config on the 1m model with the fake engine: seconds per step on a laptop CPU."""
    path = tmp_path / name
    path.write_text(TINY_RL.format(out=out.as_posix(), steps=steps))
    return path


def wait_for(log: Path, needle: str, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.02) -> None:
    """Wait until `needle` appears in the background process's `log`; fail (and kill it) if it exits first or
    `timeout` seconds pass."""
    t0 = time.monotonic()
    while needle not in log.read_text():
        if proc.poll() is not None or time.monotonic() - t0 > timeout:
            proc.kill()
            pytest.fail(f"never saw {needle!r}:\n{log.read_text()[-3000:]}")
        time.sleep(poll)
