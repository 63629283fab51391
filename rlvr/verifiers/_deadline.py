"""A killable worker process with a hard per-item wall-clock deadline.

Why a process: parsers can hang in C (a bignum power, a huge factorial) where no Python signal
is ever delivered, and `signal.alarm` only works on the main thread anyway.  A child process
is the one thing that can always be stopped: we kill it (SIGKILL) and start a fresh one.

Protocol (one JSON object per line over the child's stdin/stdout):
  parent → child  {"soft": seconds, "items": [[op, a, b], ...]}
  child  → parent {"ready": true} once at start, then {"r": result} per item, in order.
The child enforces a soft deadline per item itself (SIGALRM on its own main thread, see
`_mathworker`); the parent waits `soft + grace` seconds per item and kills the child when an
item overruns, answers `on_timeout` for it, restarts the child and resends the remaining items.

Lifecycle: nothing starts at import; the child starts on the first call.  It is killed at
interpreter exit (atexit), exits by itself when its stdin closes (the parent died), is killed by
the kernel when the parent dies while it is busy in C (`_lifeline`: the child gets the parent's pid
as argv[1]), and a forked copy of the parent never reuses the parent's child (pid check).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from rlvr.verifiers import _lifeline

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded 2-core box can take a while


class WorkerDied(RuntimeError):
    """The child closed its pipe or failed to start."""


class DeadlineWorker:
    """One child process running `module`'s line loop; thread-safe (calls are serialised)."""

    def __init__(self, module: str, *, grace_s: float = 0.5) -> None:
        self.module = module
        self.grace_s = grace_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = -1
        self._buf = b""
        self._lock = threading.Lock()
        self.restarts = 0  # how many times a child was killed for overrunning (for logs/tests)
        atexit.register(self.close)
        os.register_at_fork(after_in_child=self._forget_after_fork)

    def _forget_after_fork(self) -> None:
        # A forked child must not share our worker's pipes, nor a lock another thread held.
        self._proc, self._buf, self._lock = None, b"", threading.Lock()

    # -- process management -------------------------------------------------------------------
    def _start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self._proc = _lifeline.spawn(  # the child calls `_lifeline.die_with(argv[1])`
            [sys.executable, "-m", self.module, str(os.getpid())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._owner_pid, self._buf = os.getpid(), b""
        if self._read_line(time.monotonic() + STARTUP_TIMEOUT_S) != {"ready": True}:
            self._kill()
            raise WorkerDied(
                f"verifier worker `{self.module}` did not start; run `python -m {self.module}` to see "
                "why (is math-verify installed?)"
            )

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or self._owner_pid != os.getpid():
            return
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()  # type: ignore[union-attr]
        try:
            proc.kill()
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            pass

    def close(self) -> None:
        """Kill the child (if any). The next call starts a new one."""
        with self._lock:
            self._kill()

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._owner_pid != os.getpid():
            self._proc = None  # inherited through fork: the child belongs to our parent
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            self._start()
        assert self._proc is not None
        return self._proc

    # -- IO -----------------------------------------------------------------------------------
    def _read_line(self, deadline: float) -> Any:
        """Next JSON line from the child, or None when `deadline` passes or the pipe closes."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            return json.loads(line)
        except ValueError:
            return None  # not our protocol: treated like a dead worker (killed, restarted)

    def run(self, items: Sequence[Sequence[Any]], soft_s: float, on_timeout: Any) -> list[Any]:
        """Results for `items` (each `[op, a, b]`), `on_timeout` for any item that overran."""
        results: list[Any] = []
        with self._lock:
            while len(results) < len(items):
                results.extend(self._run_some(items[len(results) :], soft_s, on_timeout))
        return results

    def _run_some(self, items: Sequence[Sequence[Any]], soft_s: float, on_timeout: Any) -> list[Any]:
        """Send `items`; collect answers until done or one item overruns (then kill the child)."""
        proc = self._ensure()
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps({"soft": soft_s, "items": list(items)}).encode() + b"\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self._kill()
            return [on_timeout]  # the child died under the first item: charge it to that item
        out: list[Any] = []
        for _ in items:
            msg = self._read_line(time.monotonic() + soft_s + self.grace_s)
            if msg is None:  # hard deadline (C-level hang) or the child died: kill, skip this item
                self._kill()
                self.restarts += 1
                out.append(on_timeout)
                break
            out.append(msg.get("r", on_timeout) if isinstance(msg, dict) else on_timeout)
        return out


class WorkerPool:
    """`size` DeadlineWorkers; a batch is split into contiguous chunks that run in parallel.

    Workers start lazily (a single call starts one), so a pool costs nothing until it is busy.
    """

    def __init__(self, module: str, size: int, *, min_chunk: int = 8) -> None:
        self.workers = [DeadlineWorker(module) for _ in range(max(1, size))]
        self.min_chunk = min_chunk
        self._free: queue.SimpleQueue[DeadlineWorker] = queue.SimpleQueue()
        for worker in self.workers:
            self._free.put(worker)

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    def _run_on_free(self, items: Sequence[Sequence[Any]], soft_s: float, on_timeout: Any) -> list[Any]:
        worker = self._free.get()
        try:
            return worker.run(items, soft_s, on_timeout)
        finally:
            self._free.put(worker)

    def run(self, items: Sequence[Sequence[Any]], soft_s: float, on_timeout: Any) -> list[Any]:
        """Results for `items` in order; see `DeadlineWorker.run`."""
        n_chunks = min(len(self.workers), -(-len(items) // self.min_chunk))
        if n_chunks <= 1:
            return self._run_on_free(items, soft_s, on_timeout) if items else []
        bounds = [len(items) * k // n_chunks for k in range(n_chunks + 1)]
        chunks = [items[lo:hi] for lo, hi in itertools.pairwise(bounds)]
        # chunk k always goes to worker k, so repeated batches find their parses cached there
        with ThreadPoolExecutor(n_chunks) as pool:
            parts = list(pool.map(lambda w, c: w.run(c, soft_s, on_timeout), self.workers, chunks))
        return [result for part in parts for result in part]

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
