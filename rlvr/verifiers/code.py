"""Code-execution verifier: run untrusted Python against tests in a sandboxed child process.

Public API: `run_tests` (assert-style tests), `run_io` (stdin/stdout cases, full output
compared), `extract_code` (the program in a completion) and the `CodeResult` record.  Torch-free;
never raises on model text (a sandbox failure is reported as status "sandbox_error").

Isolation (each layer reported in `CodeResult.isolation` only when it was really in force)
-------------------------------------------------------------------------------------------
* ``process_group``: `start_new_session=True`; on timeout or output flood the parent SIGKILLs the
  whole group.  ``wall_timeout``: deadline enforced by the parent.  ``output_cap``: pipes read with a
  byte cap, child killed when exceeded.  ``tmpdir``: fresh scratch cwd, deleted afterwards.
  ``env_scrubbed``: env built from scratch (PATH, LANG, HOME=TMPDIR=scratch), so no parent secret.
* Namespaces via util-linux ``unshare`` (probed once; ``--user --map-root-user`` added when not
  root): ``netns`` (no network: only a down loopback), ``pidns`` (the parent and other processes are
  invisible; when its init exits the kernel kills every leftover process), ``mountns`` (then the
  child remounts ``/`` recursively read-only, scratch dir excepted: ``fs_readonly``), ``ipcns``, ``utsns``.
* ``rlimits``: RLIMIT_AS (memory_mb), CPU, FSIZE, NOFILE, CORE=0 and NPROC, with hard = soft.
  NPROC is not enforced for uid 0, so ``nproc`` is reported only for non-root runs; as root,
  process creation is refused by the audit hook (fork/exec/posix_spawn/_posixsubprocess) and any
  straggler dies with the PID namespace or the process group.
* ``audit_hook`` (PEP 578, cannot be removed once added): after arming it denies fork/exec/kill,
  threads, ctypes, sockets, trace/profile hooks, gc object walks, frame access (`sys._getframe`
  outside a few stdlib modules, `tb_frame`/`gi_frame`/...), `/proc` opens and writes outside the
  scratch dir.  Audit hooks are not a security boundary against native code; they are one layer.

Positive completion signal (why exit code 0 is never trusted)
-------------------------------------------------------------
The parent draws a fresh random nonce per run and passes it in a spec file that the harness reads
and closes before any program text runs.  The nonce then lives only in the closure of the audit
hook.  The harness runs the program, then each top-level test statement (asserts compiled with
optimize=0, fresh builtins, own globals), and finally raises ``sys.audit("rlvr.done", passed,
total, setup_failed)``.  The hook writes ``DONE <nonce> ...`` to a private pipe only if that event
comes directly from the original harness `main` frame (frame identity) and only once; the parent
accepts a run only with that exact line.  So `sys.exit(0)`, `os._exit(0)`, `raise SystemExit`,
printing a fake marker, patching `print`/`sys.stdout`/builtins/harness globals, atexit handlers,
threads and signal handlers cannot produce success.  Every comparison in the tests is rewritten to
a comparator built before the program ran: values are canonicalised to exact builtin types, and
a value of another type only equals one of the identical type, so `AlwaysEqual()` never equals 5.

Known limits: the program and the tests share one interpreter; code that reaches raw memory
without the audited paths (a C extension; site-packages are excluded by ``-S``) could read the
nonce.  When both sides of a comparison are instances of the same program-defined class, that
class's own `__eq__` decides.  A program may patch stdlib module functions or classes that the
tests then call (e.g. `math.isclose`, `fractions.Fraction.__eq__`).  Membership tests (`in`) against
untrusted container types (e.g. `os.environ`) raise instead of guessing.  Programs get the stdlib
only (``-S``), no threads, no subprocesses; an I/O program that ends with `os._exit` fails.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HARNESS = Path(__file__).with_name("_sandbox_child.py")
STATUSES = (
    "passed", "failed", "error", "timeout", "memory", "killed", "crashed", "output_limit", "no_signal", "sandbox_error",
)  # fmt: skip
_TAIL = 2000
_STARTUP_GRACE_S = 1.0  # interpreter + namespace start-up, on top of the caller's timeout
_NS_FULL = ["--net", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--ipc", "--uts"]
_NS_NAMES = ("netns", "pidns", "mountns", "ipcns", "utsns")


@dataclass(frozen=True, slots=True)
class CodeResult:
    """Verdict of one sandboxed run, judged in the parent.  `status` is one of `STATUSES`."""

    passed: bool
    status: str
    tests_passed: int = 0
    tests_total: int = 0
    stdout_tail: str = ""
    stderr_tail: str = ""
    duration_s: float = 0.0
    isolation: tuple[str, ...] = field(default_factory=tuple)
    detail: str = ""

    @property
    def reward(self) -> float:
        return 1.0 if self.passed else 0.0

    @property
    def fraction(self) -> float:
        """Share of test checks that passed (0.0 when there were none)."""
        return self.tests_passed / self.tests_total if self.tests_total else 0.0


@dataclass(frozen=True, slots=True)
class _Raw:
    returncode: int | None
    stdout: bytes
    stderr: bytes
    sig_lines: tuple[str, ...]
    timed_out: bool
    flooded: bool
    duration_s: float
    isolation: tuple[str, ...]


@functools.cache
def _namespace_flags() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Probe once which `unshare` flag set works here; ((), ()) when none does."""
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    if unshare is None:
        return (), ()
    user = ["--user", "--map-root-user"]
    full = [(_NS_FULL, _NS_NAMES), (user + _NS_FULL, ("userns", *_NS_NAMES))]
    net = [(["--net"], ("netns",)), ([*user, "--net"], ("userns", "netns"))]
    if os.geteuid() != 0:
        full, net = full[::-1], net[::-1]
    for flags, names in full + net:
        try:
            probe = subprocess.run([unshare, *flags, "true"], capture_output=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            continue
        if probe.returncode == 0:
            return (unshare, *flags, "--"), names
    return (), ()


def _pump(
    proc: subprocess.Popen, sig_fd: int, deadline: float, cap: int
) -> tuple[bytes, bytes, bytes, bool, bool]:
    """Read stdout/stderr/signal pipes until EOF, the deadline, or `cap` output bytes."""
    bufs = {proc.stdout.fileno(): bytearray(), proc.stderr.fileno(): bytearray(), sig_fd: bytearray()}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    timed_out = flooded = False
    try:
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in sel.select(min(left, 0.25)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                bufs[key.fd] += chunk
                if len(bufs[key.fd]) > cap:
                    flooded = True
            if flooded:
                break
    finally:
        sel.close()
    out, err, sig = (bytes(b) for b in bufs.values())
    return out, err, sig, timed_out, flooded


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _spawn(spec: dict, stdin_data: bytes, timeout_s: float, max_output_bytes: int, namespaces: bool) -> _Raw:
    """Run the harness once in a fresh scratch dir; never raises for anything the program does."""
    prefix, ns_names = _namespace_flags() if namespaces else ((), ())
    workdir = tempfile.mkdtemp(prefix="rlvr-sandbox-")
    env = {
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
    }
    spec = {**spec, "workdir": workdir, "mount_ns": "mountns" in ns_names}
    sig_r, sig_w = os.pipe()
    start = time.monotonic()
    try:
        with tempfile.TemporaryFile() as spec_file, tempfile.TemporaryFile() as stdin_file:
            spec_file.write(json.dumps(spec).encode())
            spec_file.seek(0)
            stdin_file.write(stdin_data)
            stdin_file.seek(0)
            spec_fd = spec_file.fileno()
            cmd = [*prefix, sys.executable, "-I", "-S", "-B", str(HARNESS), str(spec_fd), str(sig_w)]
            proc = subprocess.Popen(
                cmd, stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(spec_fd, sig_w),
                env=env, cwd=workdir, start_new_session=True,
            )  # fmt: skip
        os.close(sig_w)
        sig_w = -1
        with proc:
            out, err, sig, timed_out, flooded = _pump(
                proc, sig_r, start + timeout_s + _STARTUP_GRACE_S, max_output_bytes
            )
            if timed_out or flooded:
                _kill_group(proc.pid)
            try:
                returncode = proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                _kill_group(proc.pid)
                returncode = proc.wait()
            _kill_group(proc.pid)  # stragglers that escaped nothing else
        base = ("process_group", "wall_timeout", "output_cap", "tmpdir", "env_scrubbed")
        nproc = ("nproc",) if os.geteuid() != 0 else ()
        lines = tuple(sig.decode("utf-8", "replace").splitlines())
        return _Raw(
            returncode, out, err, lines, timed_out, flooded, time.monotonic() - start, base + ns_names + nproc
        )
    finally:
        for fd in (sig_r, sig_w):
            if fd >= 0:
                os.close(fd)
        shutil.rmtree(workdir, ignore_errors=True)


def _tail(data: bytes) -> str:
    return data[-_TAIL:].decode("utf-8", "replace")


def _parse_signals(raw: _Raw, nonce: str) -> tuple[tuple[int, int, int] | None, tuple[str, ...], list[str]]:
    """(done counts or None, child-side isolation from before ARMED, exception type names)."""
    armed = raw.sig_lines.index("ARMED") if "ARMED" in raw.sig_lines else len(raw.sig_lines)
    iso = tuple(line[4:] for line in raw.sig_lines[:armed] if line.startswith("ISO "))
    excs = [line.split()[-1] for line in raw.sig_lines if line.startswith("EXC ") and len(line.split()) == 3]
    for line in raw.sig_lines[armed:]:
        parts = line.split()
        if len(parts) == 5 and parts[0] == "DONE" and secrets.compare_digest(parts[1], nonce):
            return (int(parts[2]), int(parts[3]), int(parts[4])), iso, excs
    return None, iso, excs


def _failure_status(raw: _Raw, excs: list[str]) -> str:
    """Why a run produced no completion signal."""
    if raw.timed_out:
        return "timeout"
    if raw.flooded:
        return "output_limit"
    if "MemoryError" in excs:
        return "memory"
    rc = raw.returncode or 0
    signum = -rc if rc < 0 else rc - 128 if rc > 128 else 0
    if signum == signal.SIGXCPU:
        return "timeout"
    if signum in (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT, signal.SIGILL, signal.SIGFPE):
        return "crashed"
    if signum:
        return "killed"
    return "error" if excs else "no_signal"


def _run_once(
    mode: str, program: str, tests: str, stdin_data: bytes, opts: dict
) -> tuple[_Raw, tuple | None, str]:
    nonce = secrets.token_hex(16)
    spec = {
        "mode": mode,
        "program": program,
        "tests": tests,
        "nonce": nonce,
        "memory_mb": int(opts["memory_mb"]),
    }
    spec.update(cpu_s=int(opts["timeout_s"]) + 2, fsize_mb=16)
    raw = _spawn(spec, stdin_data, opts["timeout_s"], opts["max_output_bytes"], opts["namespaces"])
    done, iso, excs = _parse_signals(raw, nonce)
    raw = _Raw(**{**{f: getattr(raw, f) for f in _Raw.__slots__}, "isolation": raw.isolation + iso})
    if raw.timed_out or raw.flooded or done is None:
        return raw, None, _failure_status(raw, excs)
    return raw, done, ""


def _sandbox_error(exc: BaseException, start: float) -> CodeResult:
    return CodeResult(
        False, "sandbox_error", detail=f"{type(exc).__name__}: {exc}", duration_s=time.monotonic() - start
    )


def run_tests(
    program: str,
    tests: str,
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 1 << 20,
    namespaces: bool = True,
) -> CodeResult:
    """Run `program`, then `tests` (Python statements, usually asserts) against its globals.

    Passed only when the harness's nonce-bearing completion signal arrives and every top-level
    test statement succeeded (and there was at least one).  Never raises.
    """
    start = time.monotonic()
    opts = {
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
        "max_output_bytes": max_output_bytes,
        "namespaces": namespaces,
    }
    try:
        raw, done, status = _run_once("tests", str(program), str(tests), b"", opts)
    except Exception as exc:  # a broken sandbox must not crash training
        return _sandbox_error(exc, start)
    tests_passed, tests_total, setup_failed = done or (0, 0, 0)
    passed = done is not None and setup_failed == 0 and 0 < tests_total == tests_passed
    if done is not None:
        status = "passed" if passed else ("error" if tests_total == 0 and not setup_failed else "failed")
    detail = "no test checks found" if done is not None and tests_total == 0 else ""
    return CodeResult(
        passed, status, tests_passed, tests_total, _tail(raw.stdout), _tail(raw.stderr), raw.duration_s, raw.isolation, detail
    )  # fmt: skip


def _normalise_output(text: str) -> str:
    """Strip trailing whitespace per line and trailing blank lines; nothing else."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).rstrip("\n")


def run_io(
    program: str,
    cases: Sequence[tuple[str, str]],
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 1 << 20,
    namespaces: bool = True,
) -> CodeResult:
    """Run `program` once per (stdin, expected stdout) case; stops at the first failing case.

    A case passes when the program ran to completion (harness signal, exit status 0 or
    `sys.exit(0)`) and its FULL stdout equals the expected text up to trailing whitespace.
    """
    start = time.monotonic()
    opts = {
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
        "max_output_bytes": max_output_bytes,
        "namespaces": namespaces,
    }
    total, passed, raw, status = len(cases), 0, None, "error"
    try:
        for stdin_text, expected in cases:
            raw, done, status = _run_once("io", str(program), "", str(stdin_text).encode(), opts)
            if done is None:
                break
            if _normalise_output(raw.stdout.decode("utf-8", "replace")) != _normalise_output(str(expected)):
                status = "failed"
                break
            passed += 1
    except Exception as exc:  # a broken sandbox must not crash training
        return _sandbox_error(exc, start)
    ok = total > 0 and passed == total
    if raw is None:
        return CodeResult(
            False, "error", 0, 0, detail="no test cases given", duration_s=time.monotonic() - start
        )
    return CodeResult(
        ok, "passed" if ok else status, passed, total, _tail(raw.stdout), _tail(raw.stderr),
        time.monotonic() - start, raw.isolation,
    )  # fmt: skip


_MAX_COMPLETION_CHARS = 100_000
_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)


def extract_code(completion: str) -> str | None:
    """The program in a completion: the last ```python block of the answer region, else its text.

    The answer region is what follows the last `</think>` (None when a `<think>` is left open),
    narrowed to the last `<answer>...</answer>` when there is one.  Untagged fences count only
    when no python-tagged fence exists.
    """
    if not isinstance(completion, str):
        return None
    text = completion[-_MAX_COMPLETION_CHARS:]
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    elif "<think>" in text:
        return None
    if "<answer>" in text and "</answer>" in text.rsplit("<answer>", 1)[1]:
        text = text.rsplit("<answer>", 1)[1].split("</answer>", 1)[0]
    fences = _FENCE.findall(text)
    tagged = [body for lang, body in fences if lang]
    body = (tagged or [body for _, body in fences] or [text])[-1]
    return body.strip("\n") if body.strip() else None
