"""Verifier worker processes die with the trainer: started from one thread, killed by the kernel.

A verifier's worker (the split judge `_judgeproc`, the math parser `_mathworker`) can be busy in C
when the trainer dies (a bignum power, a huge factorial): it never reads the EOF on its pipe, so only
the kernel can stop it.  The worker asks for that itself at start (`die_with`: PR_SET_PDEATHSIG,
SIGKILL).  Linux sends that signal when the *thread* that forked the worker exits, not the process,
so every worker is started from one long-lived thread of the parent (`spawn`), never from a scoring
thread pool's threads (a worker started there died with its thread, and the next honest call came
back 'crashed').  A fork of the parent gets a fresh spawner thread of its own.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading

_PR_SET_PDEATHSIG = 1
_spawner: tuple[int, queue.SimpleQueue] | None = None
_spawner_lock = threading.Lock()


def spawn(argv: list[str], **popen_kw) -> subprocess.Popen:
    """`subprocess.Popen(argv, **popen_kw)`, run on this process's spawner thread."""
    global _spawner
    with _spawner_lock:
        if _spawner is None or _spawner[0] != os.getpid():  # none yet, or we are a fork
            _spawner = (os.getpid(), queue.SimpleQueue())
            threading.Thread(target=_serve, args=(_spawner[1],), daemon=True, name="rlvr-verifier-spawner").start()
        requests = _spawner[1]
    box: queue.SimpleQueue = queue.SimpleQueue()
    requests.put((argv, popen_kw, box))
    ok, value = box.get()
    if not ok:
        raise value
    return value


def _serve(requests: queue.SimpleQueue) -> None:
    while True:
        argv, popen_kw, box = requests.get()
        try:
            box.put((True, subprocess.Popen(argv, **popen_kw)))
        except BaseException as exc:  # handed to the caller
            box.put((False, exc))


def die_with(parent: int) -> None:
    """In the worker: be SIGKILLed when `parent` (pid) dies; exit now if it already has (Linux only;
    elsewhere the worker still exits when its pipe closes)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)
