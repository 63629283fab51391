"""The split judge's own process: the trusted tests run there, on the program's values, killable.

Why a process: in split mode the tests run outside the sandbox on values the program chose, so
`all(is_prime(k) for k in range(f(3)))` with `f` returning 2**60, `sum(range(f(1)))`,
`f(3) * "x"`, `str()` of a 10**7-digit int or `sorted()` of a big returned list make the judge
spin (often in C, where no Python signal lands) or allocate GBs.  A thread cannot be stopped and
`signal.alarm` works on the main thread only (the trainer may score from worker threads), so the
judge runs in a persistent worker process that the parent kills when it overruns:

* the parent keeps the sandbox (`Session`: it starts, kills and integrity-checks it) and passes
  the worker the sandbox's request/reply pipe ends (SCM_RIGHTS) with the tests, helpers, the
  program's names and the run's absolute deadline (`time.monotonic` is system-wide);
* the worker runs `_judge.run_split` talking to the sandbox directly (no relay hop) under an
  RLIMIT_AS of `memory_mb` above its own size (a MemoryError fails the check: status "memory"),
  and a timer at the deadline that raises `_judge.Overrun` (a cheap stop, the worker survives);
* the parent waits for the verdict until the deadline plus `HARD_MARGIN_S`; past it (a C-level
  loop) it SIGKILLs the worker, then kills the sandbox itself: the verdict is "timeout";
* idle workers are pooled (one per concurrent caller); a fresh one starts before the sandbox, so
  its start-up is never charged to the program's time.  A worker dies with its parent
  (`_lifeline`: PR_SET_PDEATHSIG, workers started from one long-lived thread), is never reused
  across `fork()`, and retires when it has grown large.

Frames on the socket: 8-byte big-endian length, then JSON.  Parent -> worker (with the two pipe
ends): {"tests", "helpers", "entry_point", "names", "deadline", "buf", "memory_mb"}.  Worker ->
parent: {"ready": true} once, then per job one of {"outcome": [passed, total, setup_failed,
exc_types, calls]}, {"unsplittable": why}, {"abort": failure}, {"error": why}, with
"retire": true when the worker exits after this reply (its RSS passed `RETIRE_RSS_MB`).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from rlvr.verifiers import _judge, _lifeline
from rlvr.verifiers._session import Channel

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
HARD_MARGIN_S = 0.25  # past the deadline: the soft timer had its chance, the worker is killed
STARTUP_TIMEOUT_S = 60.0
TICK_S = 0.05  # the soft timer repeats, so a test's bare `except:` cannot swallow it for good
RETIRE_RSS_MB = 512
_MAX_FRAME = 1 << 30


def _send_frame(sock: socket.socket, obj: dict, fds: tuple[int, ...] = ()) -> None:
    data = json.dumps(obj).encode()
    head = struct.pack(">Q", len(data))
    if fds:
        socket.send_fds(sock, [head], list(fds))
    else:
        sock.sendall(head)
    sock.sendall(data)


def _recv_exact(sock: socket.socket, n: int, deadline: float | None, into: bytearray) -> bool:
    while len(into) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([sock], [], [], left)[0]:
                return False
        chunk = sock.recv(min(n - len(into), 1 << 20))
        if not chunk:
            return False
        into += chunk
    return True


def _recv_frame(sock: socket.socket, deadline: float | None = None) -> tuple[dict, list[int]] | None:
    """(message, received fds), or None on EOF / past `deadline` / garbage."""
    if deadline is not None and not select.select([sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
        return None
    head, fds, _, _ = socket.recv_fds(sock, 8, 2)
    buf = bytearray(head)
    if not head or not _recv_exact(sock, 8, deadline, buf):
        return _close_all(fds)
    (size,) = struct.unpack(">Q", bytes(buf))
    body = bytearray()
    if size > _MAX_FRAME or not _recv_exact(sock, size, deadline, body):
        return _close_all(fds)
    try:
        msg = json.loads(body)
    except ValueError:
        return _close_all(fds)
    return (msg, fds) if isinstance(msg, dict) else _close_all(fds)


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# -- parent side ------------------------------------------------------------------------------
class Worker:
    """One judge process (see the module doc); `judge` is not thread-safe, the pool leases it."""

    def __init__(self) -> None:
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = "1"  # numpy in the tests: no per-core BLAS buffers against the RLIMIT_AS
        try:
            self.proc = _lifeline.spawn(
                [sys.executable, "-m", "rlvr.verifiers._judgeproc", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=env, start_new_session=True,
            )  # fmt: skip
        finally:
            theirs.close()
        self.sock, self.owner, self.healthy = ours, os.getpid(), True
        got = _recv_frame(self.sock, time.monotonic() + STARTUP_TIMEOUT_S)
        if got is None or got[0] != {"ready": True}:
            self.kill()
            raise RuntimeError("the judge process did not start; run `python -m rlvr.verifiers._judgeproc` to see why")

    def judge(self, session, tests: str, helpers: str, entry_point: str | None, names: dict, memory_mb: int) -> dict:
        """The worker's verdict frame, or {"overrun": True} / {"died": returncode} (worker killed)."""
        req_w, rep_r, buf = session.pipes()
        job = {
            "tests": tests, "helpers": helpers, "entry_point": entry_point, "names": names,
            "deadline": session.deadline, "buf": buf.hex(), "memory_mb": int(memory_mb),
        }  # fmt: skip
        self.healthy = False  # until a verdict comes back
        try:
            self.sock.settimeout(max(0.01, session.deadline + HARD_MARGIN_S - time.monotonic()))
            _send_frame(self.sock, job, (req_w, rep_r))
            self.sock.settimeout(None)
            got = _recv_frame(self.sock, session.deadline + HARD_MARGIN_S)
        except OSError:  # socket.timeout included
            got = None
        if got is None:
            overran = self.proc.poll() is None
            self.kill()
            return {"overrun": True} if overran else {"died": self.proc.returncode}
        _close_all(got[1])
        self.healthy = not got[0].pop("retire", False)  # it exits after this reply: never reuse it
        return got[0]

    def kill(self) -> None:
        self.healthy = False
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.owner != os.getpid():
            return  # inherited through fork: the process is our parent's
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


class Pool:
    """Idle judge workers; `lease()` hands one out (starting one when none is idle)."""

    def __init__(self) -> None:
        self._idle: list[Worker] = []
        self._lock = threading.Lock()
        atexit.register(self.close)
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        for w in self._idle:
            with contextlib.suppress(OSError):
                w.sock.close()
        self._idle, self._lock = [], threading.Lock()

    @contextlib.contextmanager
    def lease(self):
        with self._lock:
            worker = self._idle.pop() if self._idle else None
        if worker is None or worker.proc.poll() is not None or worker.owner != os.getpid():
            if worker is not None:
                worker.kill()
            worker = Worker()
        try:
            yield worker
        finally:
            if worker.healthy and worker.proc.poll() is None:
                with self._lock:
                    self._idle.append(worker)
            else:
                worker.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for w in idle:
            w.kill()


POOL = Pool()


# -- worker side ------------------------------------------------------------------------------
_ARMED = False


def _on_alarm(signum, frame) -> None:
    if _ARMED:
        raise _judge.Overrun("the tests ran past the deadline")


@functools.lru_cache(maxsize=64)
def _plan(tests: str, helpers: str, entry_point: str | None) -> _judge.Plan:
    return _judge.plan(tests, helpers, entry_point)  # GRPO scores a group against one test source


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def _rss_mb() -> int:
    with open("/proc/self/status") as f:
        return next((int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:")), 0)


def _limit_memory(memory_mb: int | None) -> None:
    import resource

    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    soft = hard if memory_mb is None else _vm_bytes() + (int(memory_mb) << 20)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _run_job(req: dict, fds: list[int]) -> dict:
    global _ARMED
    ch = Channel(fds[0], fds[1], float(req["deadline"]), bytes.fromhex(req["buf"]))
    p = _plan(req["tests"], req["helpers"], req["entry_point"])
    _limit_memory(req["memory_mb"])
    try:
        _ARMED = True
        signal.setitimer(signal.ITIMER_REAL, max(0.001, ch.deadline - time.monotonic()), TICK_S)
        try:
            out = _judge.run_split(ch, p, req["names"])
        finally:
            _ARMED = False
            signal.setitimer(signal.ITIMER_REAL, 0)
        return {"outcome": [out.passed, out.total, out.setup_failed, list(out.exc_types), out.calls]}
    except _judge.Unsplittable as exc:
        return {"unsplittable": str(exc)[:300]}
    except _judge.Abort:
        return {"abort": ch.failure}
    finally:
        _limit_memory(None)


def _job(req: dict, fds: list[int]) -> dict:
    try:
        if len(fds) != 2:
            return {"error": "the judge did not receive the sandbox's pipes"}
        return _run_job(req, fds)
    except _judge.Overrun:
        return {"abort": "timeout"}
    except MemoryError:
        return {"abort": "memory"}
    except Exception as exc:  # a broken helper or test source: the caller reports sandbox_error
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    finally:
        _close_all(fds)  # before the reply: the harness must see EOF when the parent closes


def main(argv: list[str]) -> int:
    sock = socket.socket(fileno=int(argv[1]))
    _lifeline.die_with(int(argv[2]))
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    _send_frame(sock, {"ready": True})
    while (got := _recv_frame(sock)) is not None:
        reply = _job(*got)
        retire = _rss_mb() > RETIRE_RSS_MB  # what a big job left behind stays with the process
        _send_frame(sock, {**reply, "retire": True} if retire else reply)
        if retire:
            return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
