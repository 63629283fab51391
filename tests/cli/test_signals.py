"""`rlvr demo` stops as a whole on SIGTERM / SIGINT, within seconds, with a message and no traceback."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.helpers import REPO, wait_for


def _start_demo(tmp_path: Path) -> tuple[subprocess.Popen, Path, Path]:
    out, log = tmp_path / "demo", tmp_path / "stderr.txt"
    err = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "rlvr.cli", "demo", "--quick", "--threads", "1", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)  # fmt: skip
    return proc, out, log


def _stop(proc: subprocess.Popen, sig: int) -> tuple[int, float]:
    proc.send_signal(sig)
    t0 = time.monotonic()
    try:
        rc = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return rc, time.monotonic() - t0


def test_sigterm_during_the_sft_stage_ends_the_whole_demo(tmp_path):
    proc, out, log = _start_demo(tmp_path)
    wait_for(log, "sft step 1/", proc, timeout=240)  # inside the SFT training loop
    rc, seconds = _stop(proc, signal.SIGTERM)
    text = log.read_text()
    assert rc == 143 and seconds < 20, (rc, seconds, text[-3000:])
    assert "Traceback" not in text and "stopped by SIGTERM" in text and "sft stage" in text
    assert "[3/5]" not in text and not (out / "eval").exists() and not (out / "summary.json").exists()
    assert (out / "sft" / "checkpoints").is_dir()  # the step it finished was saved


def test_sigterm_while_building_ends_the_demo_too(tmp_path):
    proc, _, log = _start_demo(tmp_path)
    wait_for(log, "[1/5]", proc, timeout=240)
    rc, seconds = _stop(proc, signal.SIGTERM)
    text = log.read_text()
    assert rc == 143 and seconds < 20 and "Traceback" not in text and "stopped by SIGTERM" in text, text[-3000:]


@pytest.mark.slow
def test_ctrl_c_during_evaluation_is_a_message_not_a_traceback(tmp_path):
    proc, out, log = _start_demo(tmp_path)
    wait_for(log, "[3/5]", proc, timeout=900)  # after the SFT stage, in the held-out evaluation
    rc, seconds = _stop(proc, signal.SIGINT)
    text = log.read_text()
    assert rc == 130 and seconds < 20, (rc, seconds, text[-3000:])
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    assert "stopped by SIGINT" in text and "eval_before" in text and not (out / "summary.json").exists()
