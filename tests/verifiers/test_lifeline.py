"""Verifier workers die with the trainer, and outlive the threads that started them (`_lifeline`).

The math worker (`_deadline` + `_mathworker`) and the split judge (`_judgeproc`) are killable
processes; a worker busy in C never reads the EOF on its pipe, so only PR_SET_PDEATHSIG stops it
when the trainer dies.  That signal follows the thread that started the child, hence one spawner.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from rlvr.verifiers._deadline import DeadlineWorker

ROOT = str(Path(__file__).resolve().parents[2])


def _alive(pid: int) -> bool:
    """Running, not a zombie (a zombie's parent has not reaped it yet: it is dead for our purpose)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_math_worker_busy_in_c_dies_with_a_killed_trainer() -> None:
    # The "trainer" starts the worker from a scoring thread and hands it an item that blocks, deaf to
    # SIGALRM, for 60 s (`_hang`, as C code does); then the trainer is SIGKILLed.  Without the
    # parent-death signal the worker would sleep on for a minute (its stdin EOF unread).
    script = textwrap.dedent(
        """
        import sys, threading, time
        from rlvr.verifiers._deadline import DeadlineWorker
        w = DeadlineWorker("rlvr.verifiers._mathworker", grace_s=120)
        threading.Thread(target=w.run, args=([["_hang", 60, None]], 60, 0.0), daemon=True).start()
        while w._proc is None:
            time.sleep(0.05)
        print(w._proc.pid, flush=True)
        time.sleep(600)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    trainer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=env, text=True)
    child = 0
    try:
        child = int(trainer.stdout.readline())
        time.sleep(1.0)  # the worker is past its start-up and inside `_hang`
        assert _alive(child)
        trainer.send_signal(signal.SIGKILL)
        trainer.wait(timeout=10)
        end = time.monotonic() + 10
        while _alive(child) and time.monotonic() < end:
            time.sleep(0.1)
        assert not _alive(child), "the math worker outlived the trainer"
    finally:
        trainer.kill()
        if child and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_math_worker_started_from_a_finished_thread_keeps_serving() -> None:
    # A worker started from a thread that then exits must not die with that thread.
    w = DeadlineWorker("rlvr.verifiers._mathworker")
    try:
        first: list = []
        t = threading.Thread(target=lambda: first.extend(w.run([["verify", "4", "$4$"]], 5.0, 0.0)))
        t.start()
        t.join()
        time.sleep(0.5)  # a parent-death signal, if it fired with the thread, has landed by now
        assert first == [1.0]
        assert w._proc is not None and w._proc.poll() is None, "the worker died with its starting thread"
        assert w.run([["verify", "4", "$5$"]], 5.0, 0.0) == [0.0]
        assert w.restarts == 0
    finally:
        w.close()
