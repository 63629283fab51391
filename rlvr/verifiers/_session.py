"""One run of the sandbox harness: start it, talk to it under a deadline, end it, check it is gone.

`Session` owns the process and its channels: a request pipe (parent -> harness), a reply pipe
(harness -> parent, JSON lines read with a byte cap), stdout/stderr captured in memfds (the
harness caps their size with RLIMIT_FSIZE), stdin from a memfd.  Every read has the run's one
wall-clock deadline (`timeout_s` plus a start-up grace); past it, or past the reply cap, the
sandbox is killed and `failure` says why.  `close()` kills what is left and checks nothing
survived (`_bwrap.finish`; in unsafe mode also that the scratch directory was removed), raising
`SandboxIntegrityError` otherwise: cleanup never fails silently.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rlvr.verifiers import _bwrap
from rlvr.verifiers._bwrap import SandboxIntegrityError

_HERE = Path(__file__).parent
HARNESS_FILES = ("_sandbox_child.py", "_sandbox_weak.py", "_weak_guard.py", "_weak_cells.py", "_plaindata.py")
STARTUP_GRACE_S = 1.0
MAX_REPLY_BYTES = 64 << 20
UNSAFE_ISOLATION = ("unsafe_no_sandbox", "process_group", "tmpdir", "env_scrubbed")


@dataclass(frozen=True, slots=True)
class Limits:
    timeout_s: float = 5.0
    memory_mb: int = 512
    max_output_bytes: int = 1 << 20
    nproc: int = 64
    nofile: int = 64

    def spec(self) -> dict:
        return {
            "memory_mb": int(self.memory_mb), "cpu_s": int(self.timeout_s) + 2,
            "fsize_bytes": int(self.max_output_bytes) + 1, "nofile": self.nofile, "nproc": self.nproc,
        }  # fmt: skip


def _memfd(name: str, data: bytes = b"") -> int:
    fd = os.memfd_create(name, 0)
    if data:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    return fd


@functools.cache
def _harness_data() -> dict[str, bytes]:
    return {name: (_HERE / name).read_bytes() for name in HARNESS_FILES}


class Channel:
    """The harness's JSON-line request/reply pipes, written and read under one wall-clock deadline.

    The parent's `Session` is one; the split judge's process (`_judgeproc`) builds another on
    the same pipe ends (passed to it with SCM_RIGHTS), so `failure` there only records why.
    """

    def __init__(self, req_w: int, rep_r: int, deadline: float, buf: bytes = b"") -> None:
        self._req_w, self._rep_r, self.deadline, self._buf, self.failure = req_w, rep_r, deadline, buf, ""

    def send(self, obj: dict) -> bool:
        data = (json.dumps(obj) + "\n").encode()
        view = memoryview(data)
        while view:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([], [self._req_w], [], left)[1]:
                self._fail("timeout")
                return False
            try:
                view = view[os.write(self._req_w, view[: 1 << 16]) :]
            except OSError:
                return False
        return True

    def end_requests(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._req_w)
        self._req_w = -1

    def recv(self) -> dict | None:
        """Next reply, or None (then `failure` is set, or the harness exited: failure '')."""
        while b"\n" not in self._buf:
            left = self.deadline - time.monotonic()
            if left <= 0 or not select.select([self._rep_r], [], [], left)[0]:
                self._fail("timeout")
                return None
            chunk = os.read(self._rep_r, 1 << 20)
            if not chunk:
                return None
            self._buf += chunk
            if len(self._buf) > MAX_REPLY_BYTES:
                self._fail("output_limit")
                return None
        line, self._buf = self._buf.split(b"\n", 1)
        try:
            msg = json.loads(line)
        except (ValueError, RecursionError):  # `[[[[...` from a program that found the reply pipe
            return {}
        return msg if isinstance(msg, dict) else {}

    def _fail(self, why: str) -> None:
        self.failure = self.failure or why

    def pipes(self) -> tuple[int, int, bytes]:
        """(request write end, reply read end, unread reply bytes): what a judge process needs."""
        return self._req_w, self._rep_r, self._buf


class Session(Channel):
    """A started harness; use as a context manager (`close()` on exit)."""

    def __init__(
        self,
        spec: dict,
        limits: Limits,
        host: _bwrap.Host | None,
        *,
        stdin_data: bytes = b"",
        proc_fs: bool = True,
        extra_ro_binds: tuple[str, ...] = (),
    ) -> None:
        self.limits, self.returncode, self._workdir, self._closed = limits, None, None, False
        req_r, req_w = os.pipe()
        rep_r, rep_w = os.pipe()
        Channel.__init__(self, req_w, rep_r, time.monotonic() + limits.timeout_s + STARTUP_GRACE_S)
        self._out, self._err, stdin_fd = _memfd("stdout"), _memfd("stderr"), _memfd("stdin", stdin_data)
        try:
            kw = {"stdin": stdin_fd, "stdout": self._out, "stderr": self._err, "pass_fds": (req_r, rep_w)}
            argv = ["-I", "-S", "-B"]
            if host is not None:
                proc = ("fresh_proc",) if proc_fs else ("no_proc",)
                self.isolation = host.isolation + proc + ("rlimits", "wall_timeout", "output_cap")
                self.proc = _bwrap.start(
                    host, [*argv, f"{_bwrap.SANDBOX_DIR}/_sandbox_child.py", str(req_r), str(rep_w)], _harness_data(),
                    proc_fs=proc_fs, extra_ro_binds=extra_ro_binds, **kw,
                )  # fmt: skip
            else:
                self.isolation = (*UNSAFE_ISOLATION, "rlimits", "wall_timeout", "output_cap")
                self._workdir = tempfile.mkdtemp(prefix="rlvr-unsafe-sandbox-")
                env = {**_bwrap.ENV, "HOME": self._workdir, "TMPDIR": self._workdir}
                self.proc = subprocess.Popen(
                    [sys.executable, *argv, str(_HERE / "_sandbox_child.py"), str(req_r), str(rep_w)],
                    env=env, cwd=self._workdir, start_new_session=True, **kw,
                )  # fmt: skip
        finally:
            for fd in (req_r, rep_w, stdin_fd):
                os.close(fd)
        self.send({**spec, **limits.spec()})

    def _fail(self, why: str) -> None:
        self.failure = self.failure or why
        _bwrap.kill(self.proc)

    def fail(self, why: str) -> None:
        """Kill the sandbox and record why (a judge process saw it time out or flood)."""
        self._fail(why)

    # -- end --------------------------------------------------------------------------------
    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.end_requests()
        try:
            left = max(0.05, self.deadline - time.monotonic())
            try:
                self.proc.wait(timeout=left)
            except subprocess.TimeoutExpired:
                self._fail("timeout")
            self.returncode = _bwrap.finish(self.proc)
        finally:
            os.close(self._rep_r)
            if self._workdir is not None:
                try:
                    shutil.rmtree(self._workdir)  # no ignore_errors: a leftover is loud
                except OSError as exc:
                    raise SandboxIntegrityError(
                        f"scratch {self._workdir} could not be removed: {exc}"
                    ) from exc
                if os.path.exists(self._workdir):
                    raise SandboxIntegrityError(f"scratch {self._workdir} survived the run")

    def output(self, which: str, limit: int | None = None) -> bytes:
        fd = self._out if which == "stdout" else self._err
        size = os.fstat(fd).st_size
        start = 0 if limit is None else max(0, size - limit)
        return os.pread(fd, size - start, start)

    def output_size(self) -> int:
        return os.fstat(self._out).st_size

    def release(self) -> None:
        for fd in (self._out, self._err):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.close()
        finally:
            self.release()


def exit_signal(returncode: int | None) -> int:
    rc = returncode or 0
    return -rc if rc < 0 else rc - 128 if rc > 128 else 0


def failure_status(session: Session, exc_types: list[str]) -> str:
    """Why a run produced no verdict: timeout, output_limit, memory, crashed, killed or error."""
    if session.failure:
        return session.failure
    if session.output_size() > session.limits.max_output_bytes:
        return "output_limit"
    if "MemoryError" in exc_types:
        return "memory"
    signum = exit_signal(session.returncode)
    if signum == signal.SIGXCPU:
        return "timeout"
    if signum in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE):
        return "crashed"
    if signum:
        return "killed"
    return "error" if exc_types else "no_signal"
