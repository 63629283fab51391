"""The split judge runs under the run's deadline and memory limit (`_judgeproc`), and no sandbox or
zombie outlives a run, also when the trainer is its own reaper (PID 1 without an init)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rlvr.verifiers import _judgeproc, _session
from rlvr.verifiers.code import run_tests, sandbox_available

pytestmark = pytest.mark.skipif(not sandbox_available()[0], reason="bubblewrap sandbox not available")

T = 0.5  # timeout_s of the bombs: the run's deadline is T + STARTUP_GRACE_S
BOUND = T + _session.STARTUP_GRACE_S + _judgeproc.HARD_MARGIN_S + 1.5  # + slack for a loaded machine
BOMBS = {
    "c_loop_sum_range": ("def f(x):\n    return 2 ** 60\n", "assert sum(range(f(1))) > 0\n"),
    "python_loop": ("def f(x):\n    return 2 ** 60\n", "assert all(k >= 0 for k in range(f(3)))\n"),
    "bare_except_swallows_timer": (
        "def f(x):\n    return 2 ** 60\n",
        "def spin(n):\n    for k in range(n):\n        try:\n            sum(range(1000))\n"
        "        except BaseException:\n            pass\n    return True\nassert spin(f(1))\n",
    ),
    "bignum_pow": ("def f(x):\n    return 3 if x == 1 else 10 ** 9\n", "assert pow(f(1), f(2)) > 0\n"),
}


def _children(kind: str) -> list[str]:
    """Live (non-zombie) children of this process whose command is `kind`."""
    me, out = str(os.getpid()), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if fields[1].decode() == me and fields[0] != b"Z" and comm == kind:
            out.append(pid)
    return out


@pytest.mark.parametrize("name", list(BOMBS))
def test_a_judge_bomb_times_out_within_the_deadline_and_leaves_no_sandbox(name: str) -> None:
    program, tests = BOMBS[name]
    start = time.monotonic()
    r = run_tests(program, tests, timeout_s=T, memory_mb=256)
    wall = time.monotonic() - start
    assert not r.passed and r.reward == 0.0
    assert r.status in (("timeout", "memory") if name == "bignum_pow" else ("timeout",)), r
    assert r.guarantee == "parent_judge"
    assert wall < BOUND, wall
    assert _children("bwrap") == []
    assert run_tests("def f(x):\n    return 2 * x\n", "assert f(2) == 4\n").passed  # the pool recovered


def test_a_python_level_overrun_stops_softly_and_keeps_the_worker() -> None:
    run_tests("def f(x):\n    return x\n", "assert f(1) == 1\n")
    with _judgeproc.POOL._lock:
        before = {w.proc.pid for w in _judgeproc.POOL._idle}
    program, tests = BOMBS["python_loop"]
    assert run_tests(program, tests, timeout_s=T).status == "timeout"
    with _judgeproc.POOL._lock:
        after = {w.proc.pid for w in _judgeproc.POOL._idle}
    assert before & after  # stopped by the worker's own timer, not by a kill and a restart


def test_a_value_that_makes_the_judge_allocate_gigabytes_fails_as_memory() -> None:
    program = "def f(x):\n    return 3 << 29\n"  # 1.5 GiB of "x"
    start = time.monotonic()
    r = run_tests(program, "assert len(f(1) * 'x') > 0\n", timeout_s=5.0, memory_mb=256)
    assert (r.passed, r.status) == (False, "memory"), r
    assert time.monotonic() - start < 5.0


def test_the_deadline_holds_when_called_from_a_worker_thread() -> None:
    results = []
    program, tests = BOMBS["c_loop_sum_range"]
    start = time.monotonic()
    t = threading.Thread(target=lambda: results.append(run_tests(program, tests, timeout_s=T)))
    t.start()
    t.join(timeout=30)
    assert results and results[0].status == "timeout" and time.monotonic() - start < BOUND


def test_a_worker_started_from_a_thread_outlives_that_thread() -> None:
    # PR_SET_PDEATHSIG follows the thread that started the child: workers started from a
    # scoring thread pool died with its threads, and the next honest call came back "crashed"
    _judgeproc.POOL.close()
    t = threading.Thread(target=lambda: run_tests("def f(x):\n    return x\n", "assert f(1) == 1\n"))
    t.start()
    t.join(timeout=30)
    time.sleep(0.3)
    with _judgeproc.POOL._lock:
        assert _judgeproc.POOL._idle and all(w.proc.poll() is None for w in _judgeproc.POOL._idle)
    assert run_tests("def f(x):\n    return x\n", "assert f(1) == 1\n").passed


def test_the_weak_rerun_gets_only_the_time_split_mode_left() -> None:
    # split mode spends 1.2 s of 1.0 (+ grace) before the lambda makes it unsplittable; a weak
    # rerun with a fresh 1.0 s would pass after ~2.6 s
    program = "import time\ndef f(x):\n    time.sleep(0.6)\n    return x\ndef g(h):\n    return h()\n"
    tests = "assert f(1) == 1\nassert f(2) == 2\nassert g(lambda: 3) == 3\n"
    start = time.monotonic()
    r = run_tests(program, tests, timeout_s=1.0)
    assert not r.passed and r.status == "timeout", r
    assert time.monotonic() - start < 1.0 + _session.STARTUP_GRACE_S + 0.5


def test_honest_programs_still_pass_in_split_and_weak_mode() -> None:
    assert run_tests("def f(x):\n    return list(range(x))\n", "assert sorted(f(1000))[-1] == 999\n").passed
    weak = run_tests("def g(h):\n    return h() + 1\n", "assert g(lambda: 2) == 3\n")
    assert weak.passed and weak.guarantee == "in_sandbox_judge"


def test_garbage_on_the_reply_pipe_is_the_programs_failure_not_a_sandbox_error() -> None:
    # `[[[[...` on every fd: json.loads raised RecursionError in the parent -> "sandbox_error"
    spray = "import os\nfor fd in range(3, 30):\n    try:\n        os.write(fd, b'[' * 200000 + b'\\n')\n    except OSError:\n        pass\n"
    for program in (spray + "def f(x):\n    return x\n", "def f(x):\n" + spray.replace("\n", "\n    ") + "return x\n"):
        r = run_tests(program, "assert f(1) == 1\n", timeout_s=5.0)
        assert not r.passed and r.status != "sandbox_error", r


REAPER = r"""
import ctypes, os, sys
assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER: as PID 1 would be
from rlvr.verifiers import _session
from rlvr.verifiers.code import run_tests
_session.STARTUP_GRACE_S = 0.1  # cheap killed sandboxes
for i in range(int(sys.argv[1])):
    program = "import time\ndef f(x):\n    time.sleep(60)\n" if i % 2 else "while True:\n    pass\n"
    assert run_tests(program, "assert f(1) == 2\n", timeout_s=0.2).status == "timeout"
me, zombies = str(os.getpid()), 0
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        fields = open(f"/proc/{pid}/stat", "rb").read().rsplit(b")", 1)[1].split()
    except OSError:
        continue
    zombies += fields[1].decode() == me and fields[0] == b"Z"
print("zombies", zombies)
"""


@pytest.mark.slow
def test_a_reaping_trainer_keeps_no_zombie_of_killed_sandboxes() -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run(
        [sys.executable, "-c", REAPER, "20"], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["zombies", "0"], out.stdout
