"""Code-execution verifier: run untrusted Python against tests, judged outside the untrusted interpreter.

Public API: `run_tests` (assert-style tests), `run_io` (stdin/stdout cases, full output compared
in the parent), `extract_code` (the program in a completion) and the `CodeResult` record.
Torch-free; never raises on model text (a broken sandbox is status "sandbox_error"; a sandbox
that outlives its run raises `SandboxIntegrityError`, which is never model text's doing).

Isolation is the OS's (`_bwrap`): bubblewrap with new user/pid/net/ipc/uts/cgroup/mount
namespaces, an unprivileged host uid, no capabilities, a minimal read-only root (interpreter and
stdlib only), a fresh /proc, a read-only /dev, a tmpfs scratch, a seccomp filter (`_seccomp`: among
others no new processes, so the address-space limit is the run's whole memory), rlimits (CPU,
address space, processes, file size, open files) and a wall-clock deadline.  Where bwrap cannot run,
`run_tests` refuses (status "sandbox_unavailable") unless the caller passes
`allow_unsafe_no_sandbox=True`; `CodeResult.isolation` lists the layers that were in force.

The verdict is the parent's (`_judge`): the tests run here, the program's functions run in the
sandbox, and only plain data crosses (`_plaindata`), so the expected values never enter the
sandbox and no object the program made is ever compared.  `CodeResult.guarantee`:

* "parent_judge": split mode (and `run_io`); the program can only influence the values its own
  functions return;
* "in_sandbox_judge": the tests could not be split (they use the program's classes or
  instances, pass lambdas, ...) and ran inside the sandbox (`_sandbox_weak`); the host is still
  protected, but the pass signal comes from the untrusted interpreter (audit hook + nonce, which
  are defence in depth, not a boundary; the tests' own functions and classes have empty globals
  that answer only the tests' own reads and closure cells that hold only empty boxes, so an
  instance of theirs does not lead to their values).

The parent's judging is bounded too (`_judgeproc`): the split judge runs in a pooled worker
process (never in the caller's, so it works from any thread) that gets the sandbox's pipes, an
address-space limit of `memory_mb` above its own size and the run's deadline.  A value the program
chose that makes the tests spin (`sum(range(f(1)))` with 2**60, a bignum `pow`) is stopped at the
deadline: "timeout", reward 0 (a C-level loop by SIGKILL `_judgeproc.HARD_MARGIN_S` later, the
worker restarts); one that makes them allocate GBs (`f(1) * "x"`) fails as "memory".  So a
`run_tests` call ends within `timeout_s` + `_session.STARTUP_GRACE_S` + `HARD_MARGIN_S` (6.3 s
measured at `timeout_s=5`), the weak rerun included (it gets only the time split mode left).
`run_io` compares at most `max_output_bytes` of output per case in the parent (linear time) and
applies `timeout_s` per case.  A killed sandbox's inner bwrap is reaped when it is re-parented to
us (the trainer as PID 1 of a container without an init), so no zombie accumulates.

HumanEval-style tasks pass the prompt as `helpers` (its helper functions, such as HumanEval/32's
`poly`, are then the parent's own copies) and the `entry_point`.
"""

from __future__ import annotations

import dataclasses
import functools
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from rlvr.verifiers import _bwrap, _judge, _judgeproc
from rlvr.verifiers._bwrap import SandboxIntegrityError, SandboxUnavailable
from rlvr.verifiers._session import Limits, Session, failure_status

STATUSES = (
    "passed", "failed", "error", "timeout", "memory", "killed", "crashed", "output_limit", "no_signal",
    "sandbox_error", "sandbox_unavailable",
)  # fmt: skip
GUARANTEES = ("parent_judge", "in_sandbox_judge", "")
_TAIL = 2000
__all__ = [
    "GUARANTEES", "STATUSES", "CodeResult", "SandboxIntegrityError", "SandboxUnavailable", "extract_code",
    "run_io", "run_tests", "sandbox_available",
]  # fmt: skip


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
    guarantee: str = ""  # one of GUARANTEES ("" when nothing was judged)

    @property
    def reward(self) -> float:
        return 1.0 if self.passed else 0.0

    @property
    def fraction(self) -> float:
        """Share of test checks that passed (0.0 when there were none)."""
        return self.tests_passed / self.tests_total if self.tests_total else 0.0

    @property
    def sandboxed(self) -> bool:
        """Whether the OS sandbox (bwrap) was in force, not the unsafe opt-in."""
        return "bwrap" in self.isolation


@functools.cache
def _host_or_reason() -> _bwrap.Host | str:
    try:
        return _bwrap.host()
    except SandboxUnavailable as exc:
        return str(exc)


def sandbox_available() -> tuple[bool, str]:
    """(True, "") when bwrap sandboxes can run here, else (False, why)."""
    h = _host_or_reason()
    return (True, "") if isinstance(h, _bwrap.Host) else (False, h)


def _host(allow_unsafe: bool) -> _bwrap.Host | None:
    h = _host_or_reason()
    if isinstance(h, _bwrap.Host):
        return h
    if allow_unsafe:
        return None
    raise SandboxUnavailable(f"{h}; refusing to run untrusted code (allow_unsafe_no_sandbox=True overrides)")


def _tail(data: bytes) -> str:
    return data[-_TAIL:].decode("utf-8", "replace")


def _result(s: Session, start: float, passed: bool, status: str, counts=(0, 0), **kw) -> CodeResult:
    return CodeResult(
        passed, status, counts[0], counts[1], _tail(s.output("stdout", _TAIL)), _tail(s.output("stderr", _TAIL)),
        time.monotonic() - start, s.isolation, **kw,
    )  # fmt: skip


def _verdict(passed: int, total: int, setup_failed: int, exc_types) -> tuple[bool, str, str]:
    ok = setup_failed == 0 and 0 < total == passed
    if ok:
        return True, "passed", ""
    if total == 0 and not setup_failed:
        return False, "error", "no test checks found"
    return False, ("memory" if "MemoryError" in exc_types else "failed"), ""


def _start(s: Session) -> tuple[dict | None, list[str]]:
    """Read the harness's start-up replies; (program event or None, exception types)."""
    first = s.recv()
    msg = s.recv() if first is not None and first.get("ev") == "limits" else None
    if msg is None or msg.get("ev") != "program":
        return None, []
    return msg, ([] if msg.get("ok") else [str(msg.get("exc", "Exception"))])


@dataclass(frozen=True, slots=True)
class _Sources:
    tests: str
    helpers: str
    entry_point: str | None


def _judged(s: Session, reply: dict, start: float) -> CodeResult:
    """The CodeResult for the judge process's reply (a verdict, or why there is none)."""
    if "outcome" in reply:
        passed, total, setup_failed, exc_types, _calls = reply["outcome"]
        ok, status, detail = _verdict(passed, total, setup_failed, exc_types)
        return _result(s, start, ok, status, (passed, total), detail=detail, guarantee="parent_judge")
    if "error" in reply:
        raise RuntimeError(f"judge: {reply['error']}")
    why = str(reply.get("abort") or ("timeout" if "overrun" in reply else ""))
    if why in ("timeout", "output_limit"):
        s.fail(why)  # the judge saw the sandbox (or itself) overrun: kill the sandbox now
    s.close()
    status = why if why == "memory" else "crashed" if "died" in reply else failure_status(s, [])
    detail = "the tests ran past the deadline on the program's values" if "overrun" in reply else ""
    return _result(s, start, False, status, guarantee="parent_judge", detail=detail)


def _run_split(program: str, p: _judge.Plan, src: _Sources, limits: Limits, host, start: float) -> CodeResult | None:
    """Split mode; None when the tests turn out not to be splittable."""
    spec = {"mode": "split", "program": program, "names": list(p.remote)}
    with _judgeproc.POOL.lease() as judge, Session(spec, limits, host) as s:
        msg, excs = _start(s)
        if msg is None or not msg.get("ok"):
            s.close()
            return _result(s, start, False, failure_status(s, excs), guarantee="parent_judge")
        names = msg.get("names") if isinstance(msg.get("names"), dict) else {}
        reply = judge.judge(s, src.tests, src.helpers, src.entry_point, names, limits.memory_mb)
        if "unsplittable" in reply:
            return None
        result = _judged(s, reply, start)
        s.close()
        return result


def _run_weak(program: str, tests: str, limits: Limits, host, start: float) -> CodeResult:
    """Tests inside the sandbox (see `_sandbox_weak`); the pass line must carry the nonce."""
    nonce = secrets.token_hex(16)
    spec = {"mode": "tests", "program": program, "tests": tests, "nonce": nonce}
    with Session(spec, limits, host, proc_fs=False) as s:
        done, excs = None, []
        while (msg := s.recv()) is not None:
            if (
                msg.get("ev") == "done"
                and done is None
                and secrets.compare_digest(str(msg.get("nonce")), nonce)
            ):
                counts = msg.get("counts")
                if isinstance(counts, list) and len(counts) == 3 and all(type(c) is int for c in counts):
                    done = counts
            elif msg.get("ev") in ("exc", "program") and (msg.get("type") or msg.get("exc")):
                excs.append(str(msg.get("type") or msg.get("exc")))
        s.close()
        if done is None or s.failure:
            return _result(s, start, False, failure_status(s, excs), guarantee="in_sandbox_judge")
        passed, status, detail = _verdict(*done, excs)
        return _result(
            s, start, passed, status, (done[0], done[1]), detail=detail or "tests ran inside the sandbox",
            guarantee="in_sandbox_judge",
        )  # fmt: skip


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
    helpers: str = "",
    entry_point: str | None = None,
    allow_unsafe_no_sandbox: bool = False,
) -> CodeResult:
    """Run `program`, then judge it with `tests` (Python statements, usually asserts).

    Passed only when every top-level test statement succeeded (and there was at least one).
    `helpers`: trusted source (a task prompt) whose definitions the parent evaluates itself;
    `entry_point`: the program's function under test (a stub of it in `helpers` is ignored).
    Never raises on model text.
    """
    start = time.monotonic()
    limits = Limits(timeout_s, memory_mb, max_output_bytes)
    try:
        host = _host(allow_unsafe_no_sandbox)
    except SandboxUnavailable as exc:
        return CodeResult(False, "sandbox_unavailable", detail=str(exc))
    try:
        p = _judge.plan(str(tests), str(helpers), entry_point)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return CodeResult(
            False, "error", detail=f"tests or helpers do not parse: {type(exc).__name__}: {exc}"
        )
    try:
        src = _Sources(str(tests), str(helpers), entry_point)
        result = _run_split(str(program), p, src, limits, host, start)
        if result is not None:
            return result
        left = timeout_s - (time.monotonic() - start)  # the weak rerun gets what split mode left
        if left <= 0:
            return CodeResult(False, "timeout", duration_s=time.monotonic() - start, detail="no time left for the weak mode")
        return _run_weak(str(program), str(tests), dataclasses.replace(limits, timeout_s=left), host, start)
    except SandboxIntegrityError:
        raise
    except Exception as exc:  # a broken sandbox must not crash training
        return _sandbox_error(exc, start)


def _normalise_output(text: str) -> str:
    """Strip trailing whitespace per line and trailing blank lines; nothing else."""
    return "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").split("\n")).rstrip("\n")


def _same_output(out: str, expected: str) -> bool:
    """`_normalise_output(out) == _normalise_output(expected)` without normalising `out`: its lines
    are compared in place and it stops at the first difference, so a program's (up to
    `max_output_bytes`) output of blank or junk lines costs neither a list of its lines nor a copy
    of each, and `expected` (trusted) is the only text normalised."""
    want = _normalise_output(expected).split("\n")
    text = out.replace("\r\n", "\n") if "\r\n" in out else out
    pos = 0
    for line in want:
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        if pos > len(text) or text[pos:end].rstrip() != line:
            return False
        pos = end + 1
    return pos > len(text) or not text[pos:].strip()  # only blank lines may follow


def _run_case(program: str, case: tuple[str, str], limits: Limits, host) -> tuple[str, tuple, tuple]:
    """One stdin/stdout case: (status or "" when it passed, (stdout, stderr) tails, isolation)."""
    stdin_text, expected = (str(x) for x in case)
    with Session({"mode": "io", "program": program}, limits, host, stdin_data=stdin_text.encode()) as s:
        msg, excs = _start(s)
        s.close()
        tails = (_tail(s.output("stdout", _TAIL)), _tail(s.output("stderr", _TAIL)))
        if msg is None or not msg.get("ok") or s.failure or s.output_size() > limits.max_output_bytes:
            return failure_status(s, excs), tails, s.isolation
        out = s.output("stdout").decode("utf-8", "replace")
        return ("" if _same_output(out, expected) else "failed"), tails, s.isolation


def run_io(
    program: str,
    cases: Sequence[tuple[str, str]],
    *,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    max_output_bytes: int = 1 << 20,
    allow_unsafe_no_sandbox: bool = False,
) -> CodeResult:
    """Run `program` once per (stdin, expected stdout) case; stops at the first failing case.

    A case passes when the program ran to completion (to its end, or `sys.exit(0)`) and its FULL
    stdout equals the expected text up to trailing whitespace; the comparison is the parent's.
    """
    start = time.monotonic()
    limits = Limits(timeout_s, memory_mb, max_output_bytes)
    if not cases:
        return CodeResult(False, "error", detail="no test cases given")
    try:
        host = _host(allow_unsafe_no_sandbox)
    except SandboxUnavailable as exc:
        return CodeResult(False, "sandbox_unavailable", detail=str(exc))
    passed, status, tails, isolation = 0, "", ("", ""), ()
    try:
        for case in cases:
            status, tails, isolation = _run_case(str(program), case, limits, host)
            if status:
                break
            passed += 1
    except SandboxIntegrityError:
        raise
    except Exception as exc:  # a broken sandbox must not crash training
        return _sandbox_error(exc, start)
    ok = passed == len(cases)
    return CodeResult(
        ok, status or "passed", passed, len(cases), *tails, time.monotonic() - start, isolation,
        guarantee="parent_judge",
    )  # fmt: skip


_MAX_COMPLETION_CHARS = 100_000
_FENCE_MARK = "```"
_MAX_FENCE_HEADER = 32  # "```" + blanks + language + blanks before the newline
_PYTHON_TAGS = ("python", "python3", "py")


def _fences(text: str) -> list[tuple[str, str]]:
    """(language tag, body) of each ``` fence, in order; linear time, no regex.

    An opening fence is "```", optional blanks, an optional tag from `_PYTHON_TAGS` (any case),
    optional blanks and a newline within `_MAX_FENCE_HEADER` characters; its body runs to the
    next "```".  (The regex this replaces backtracked quadratically on "```" + blanks.)
    """
    out, i = [], 0
    while (start := text.find(_FENCE_MARK, i)) >= 0:
        head_end = start + len(_FENCE_MARK)
        newline = text.find("\n", head_end, head_end + _MAX_FENCE_HEADER)
        header = text[head_end:newline].rstrip("\r").strip(" \t") if newline >= 0 else None
        if header is None or header.lower() not in ("", *_PYTHON_TAGS):
            i = head_end
            continue
        end = text.find(_FENCE_MARK, newline + 1)
        if end < 0:
            break
        out.append((header.lower(), text[newline + 1 : end]))
        i = end + len(_FENCE_MARK)
    return out


def extract_code(completion: str) -> str | None:
    """The program in a completion: the last ```python block of the answer region, else its text.

    The answer region is what follows the last `</think>` (None when a `<think>` is left open),
    narrowed to the last `<answer>...</answer>` when there is one.  Untagged fences count only
    when no python-tagged fence exists.  Linear time; only the last `_MAX_COMPLETION_CHARS`
    characters are read.
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
    fences = _fences(text)
    tagged = [body for lang, body in fences if lang]
    body = (tagged or [body for _, body in fences] or [text])[-1]
    return body.strip("\n") if body.strip() else None
