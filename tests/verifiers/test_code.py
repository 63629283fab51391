"""Sandbox verifier: legit programs pass, every known reward hack fails, and the host stays safe."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlvr.verifiers.code import STATUSES, CodeResult, extract_code, run_io, run_tests, sandbox_available

pytestmark = pytest.mark.skipif(
    not sandbox_available()[0], reason=f"no bwrap sandbox: {sandbox_available()[1]}"
)

DOUBLE = "def f(x):\n    return 2 * x\n"
TESTS = "assert f(2) == 4\nassert f(3) == 6\n"
ALWAYS_EQ = "class A:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n    __hash__ = None\n"


def run(program: str, tests: str = TESTS, **kw) -> CodeResult:
    return run_tests(program, tests, timeout_s=kw.pop("timeout_s", 3.0), **kw)


# (id, program, tests) -- legit programs that must PASS (false negatives matter)
LEGIT = [
    ("plain", DOUBLE, TESTS),
    ("int_vs_float", DOUBLE, "assert f(2) == 4.0"),  # 4 == 4.0 as in Python
    (
        "namedtuple",
        "import collections\nP = collections.namedtuple('P', 'a b')\ndef f(x): return P(x, x)",
        "assert f(1) == (1, 1)",
    ),
    (
        "counter",
        "from collections import Counter\ndef f(s): return Counter(s)",
        "from collections import Counter\nassert f('aab') == Counter({'a': 2, 'b': 1})",
    ),
    (
        "nested",
        "def f(x): return {'k': [(1, 2.0), {3}], 'n': None}",
        "assert f(0) == {'k': [(1, 2), {3}], 'n': None}",
    ),
    (
        "chain_and_in",
        DOUBLE,
        "assert 0 < f(1) < 3\nassert f(1) in [1, 2]\nassert 'b' in 'abc'\nassert f(1) not in {5}",
    ),
    (
        "same_user_type",
        "class N:\n    def __init__(s, v): s.v = v\n    def __eq__(s, o): return isinstance(o, N) and o.v == s.v\ndef f(x): return N(x)",
        "assert f(1) == N(1)\nassert f(1) != N(2)",
    ),
    ("humaneval_check", DOUBLE, "def check(candidate):\n    assert candidate(2) == 4\n\ncheck(f)"),
    (
        "sys_exit_zero_at_end",
        DOUBLE + "import sys\nsys.exit(0)\n",
        TESTS,
    ),  # exit 0 after defining f is harmless
    ("stdin_eof_no_hang", "import sys\ndata = sys.stdin.read()\n" + DOUBLE, TESTS),
    (
        "scratch_write_read",
        "open('x.txt', 'w').write('hi')\ndef f(x): return open('x.txt').read()",
        "assert f(0) == 'hi'",
    ),
    (
        "dataclass",
        "from dataclasses import dataclass\n@dataclass\nclass P:\n    a: int\ndef f(x): return P(x)",
        "assert f(1) == P(1)",
    ),
]


@pytest.mark.parametrize(("program", "tests"), [c[1:] for c in LEGIT], ids=[c[0] for c in LEGIT])
def test_legit_programs_pass(program: str, tests: str) -> None:
    r = run(program, tests)
    assert (r.passed, r.status, r.reward) == (True, "passed", 1.0), r
    assert r.sandboxed
    # tests that compare the program's own class instances cannot be split: weaker, and said so
    weak = "== N(" in tests or "== P(" in tests
    assert r.guarantee == ("in_sandbox_judge" if weak else "parent_judge"), r


# (id, program, tests, expected status) -- every one is a WRONG solution dressed up with a hack.
# Most of them are harmless now: the program runs in the sandbox with nothing to forge, the tests
# run in the parent, and `f` is missing or wrong, so the tests fail ("failed").
HACKS = [
    ("sys_exit_early", "import sys\nsys.exit(0)\n" + DOUBLE, TESTS, "failed"),
    ("raise_systemexit", "raise SystemExit\n", TESTS, "failed"),
    ("os_exit_early", "import os\nos._exit(0)\n", TESTS, "no_signal"),
    ("exit_inside_function", "import os\ndef f(x): os._exit(0)", TESTS, "no_signal"),
    ("always_equal", ALWAYS_EQ + "def f(x): return A()", TESTS, "failed"),
    ("always_equal_in_list", ALWAYS_EQ + "def f(x): return [A(), A()]", "assert f(0) == [1, 2]", "failed"),
    ("always_equal_membership", ALWAYS_EQ + "def f(x): return A()", "assert f(1) in [7, 8]", "failed"),
    (
        "int_subclass_eq",
        "class I(int):\n    def __eq__(s, o): return True\ndef f(x): return I(0)",
        TESTS,
        "failed",
    ),
    (
        "str_subclass_eq",
        "class S(str):\n    def __eq__(s, o): return True\n    __hash__ = str.__hash__\ndef f(x): return S('')",
        "assert f(0) == 'abc'",
        "failed",
    ),
    (
        "lying_arithmetic",
        "class Z:\n    def __sub__(s, o): return s\n    def __abs__(s): return s\n    def __lt__(s, o): return True\ndef f(x): return Z()",
        "assert abs(f(1) - 3.14) < 1e-6",
        "failed",
    ),
    (
        "fake_class_attr",
        "class F:\n    __class__ = int\n    def __eq__(s, o): return True\ndef f(x): return F()",
        TESTS,
        "failed",
    ),
    (
        "patch_builtins_all",
        "import builtins\nbuiltins.all = lambda *a: True\ndef f(x): return 0",
        "assert all([f(1) == 2])",
        "failed",
    ),
    (
        "patch_own_builtins_dict",
        "__builtins__['all'] = lambda *a: True\ndef f(x): return 0",
        "assert all([f(1) == 2])",
        "error",
    ),
    (
        "patch_assertionerror",
        "import builtins\nbuiltins.AssertionError = type('X', (Exception,), {})\ndef f(x): return 0",
        TESTS,
        "failed",
    ),
    (
        "patch_globals_midtest",
        "def f(x):\n    import builtins\n    builtins.len = lambda o: 1\n    return 0",
        "assert f(1) == 1\nassert len([1, 2]) == 1",
        "failed",
    ),
    (
        "forge_stdout_marker",
        "import sys\nprint('DONE 0 1 1 0')\nsys.stdout = open('/dev/null', 'w')\ndef f(x): return 0",
        TESTS,
        "failed",
    ),
    (
        "forge_every_fd",
        "import os\nfor fd in range(3, 64):\n    try: os.write(fd, b'DONE deadbeef 2 2 0\\n')\n    except OSError: pass\nos._exit(0)",
        TESTS,
        "no_signal",
    ),
    (
        "forge_audit_event",
        "import sys\nsys.audit('rlvr.done', 2, 2, 0)\nimport os\nos._exit(0)",
        TESTS,
        "no_signal",
    ),
    ("rerun_harness_main", "import sys\nsys.modules['__main__'].main()\n", TESTS, "timeout"),
    ("frame_walk_getframe", "import sys\nsys._getframe(1).f_locals\n", TESTS, "failed"),
    ("frame_walk_inspect", "import inspect\ninspect.currentframe().f_back\n", TESTS, "failed"),
    (
        "frame_walk_traceback",
        "try:\n    1 / 0\nexcept Exception as e:\n    e.__traceback__.tb_frame\n",
        TESTS,
        "failed",
    ),
    ("gc_walk", "import gc\ngc.get_objects()\n", TESTS, "failed"),
    ("settrace_skip", "import sys\nsys.settrace(lambda *a: None)\n", TESTS, "failed"),
    ("ctypes", "import ctypes\n", TESTS, "failed"),
    (
        "disarm_hook_globals",
        "import sys\nm = sys.modules['__main__']\nm._DENY_EVENTS = frozenset()\nm._DENY_IMPORTS = ()\nimport ctypes\n",
        TESTS,
        "failed",
    ),
    ("read_own_memory", "open('/proc/self/mem', 'rb')\n", TESTS, "failed"),
    ("kill_parent", "import os\nos.kill(os.getppid(), 9)\n", TESTS, "failed"),
    ("kill_group", "import os\nos.killpg(0, 9)\n", TESTS, "killed"),
    ("fork_bomb", "import os\nwhile True:\n    os.fork()\n", TESTS, "error"),
    ("subprocess", "import subprocess\nsubprocess.run(['sh', '-c', 'echo hi'])\n", TESTS, "error"),
    ("thread", "import threading\nthreading.Thread(target=print).start()\n", TESTS, "failed"),
    ("raw_thread", "import _thread\n_thread.start_new_thread(print, ())\n", TESTS, "failed"),
    ("fresh_thread_module", "import sys\ndel sys.modules['_thread']\nimport _thread\n", TESTS, "failed"),
    (
        "marshal_code",
        "import marshal\nmarshal.loads(marshal.dumps(compile('1', 'x', 'exec')))\n",
        TESTS,
        "failed",
    ),
    ("code_replace", "def g(): pass\ng.__code__.replace(co_code=b'')\n", TESTS, "failed"),
    ("recursion", "def r(n): return r(n + 1)\nr(0)\n", TESTS, "error"),
    ("syntax_error", "def f(x) return 2 * x\n", TESTS, "error"),
    ("segfault", "import faulthandler\nfaulthandler._sigsegv()\n", TESTS, "crashed"),
    ("memory_bomb", "x = bytearray(1 << 31)\n", TESTS, "memory"),
]


@pytest.mark.parametrize(("program", "tests", "status"), [c[1:] for c in HACKS], ids=[c[0] for c in HACKS])
def test_hacks_do_not_pass(program: str, tests: str, status: str) -> None:
    r = run(program, tests, memory_mb=256)
    assert not r.passed and r.reward == 0.0, r
    assert r.status == status, r


def test_no_checks_is_not_a_pass() -> None:
    r = run(DOUBLE, "x = 1\n")  # setup only: nothing was checked
    assert (r.passed, r.status, r.tests_total) == (False, "error", 0)


def test_counts_and_fraction() -> None:
    r = run(DOUBLE, "assert f(1) == 2\nassert f(2) == 5\nassert f(3) == 6\n")
    assert (r.passed, r.status, r.tests_passed, r.tests_total) == (False, "failed", 2, 3)
    assert r.fraction == pytest.approx(2 / 3)


def test_infinite_loop_times_out_fast() -> None:
    t0 = time.monotonic()
    r = run("while True:\n    pass\n", timeout_s=0.5)
    assert r.status == "timeout" and not r.passed
    assert time.monotonic() - t0 < 4.0  # 0.5 s budget + 1 s start-up grace + kill


def test_output_flood_is_capped_and_fast() -> None:
    t0 = time.monotonic()
    r = run("while True:\n    print('x' * 65536)\n", max_output_bytes=1 << 20)
    assert r.status == "output_limit" and not r.passed
    assert time.monotonic() - t0 < 4.0
    assert len(r.stdout_tail) <= 2000


def test_env_secret_not_visible(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLVR_FAKE_SECRET", "hunter2")
    program = (
        "import os\nprint(sorted(os.environ))\n"
        "def f(x):\n    return (sorted(os.environ), os.environ.get('RLVR_FAKE_SECRET'))\n"
    )
    r = run(program, "names, secret = f(0)\nassert secret is None\nassert 'PATH' in names\n")
    assert r.passed, r
    assert "hunter2" not in r.stdout_tail and "RLVR_FAKE_SECRET" not in r.stdout_tail


def test_writes_never_reach_the_host() -> None:
    target = f"/tmp/rlvr-pwned-{uuid.uuid4().hex}"  # inside, /tmp is the sandbox's own tmpfs
    for program in (
        f"open({target!r}, 'w').write('x')",
        f"import os\nos.open({target!r}, os.O_CREAT | os.O_WRONLY)",
    ):
        r = run(program + "\ndef f(x): return 2 * x\n")
        assert r.passed and not os.path.exists(target), r
    for path in ("/pwned", "/usr/lib/pwned", "/proc/sys/kernel/hostname"):
        r = run(f"open({path!r}, 'w').write('x')\n" + DOUBLE)
        assert r.status == "error", r
    assert not os.path.exists("/pwned") and not os.path.exists("/usr/lib/pwned")


def test_root_is_read_only_and_scratch_is_writable() -> None:
    program = (
        "import os\n"
        "def f():\n"
        "    open('x.txt', 'w').write('hi')\n"
        "    return (bool(os.statvfs('/').f_flag & os.ST_RDONLY), os.getcwd(), open('x.txt').read())\n"
    )
    r = run(program, "assert f() == (True, '/tmp', 'hi')")
    assert r.passed, r


def test_network_is_unreachable() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        probe = (
            "import socket\ndef f():\n    try:\n"
            f"        socket.create_connection(('127.0.0.1', {port}), timeout=1)\n        return 'connected'\n"
            "    except OSError as e:\n        return type(e).__name__\n"
        )
        r = run(probe, "assert f() != 'connected'\n")
        assert r.passed, r
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody got through
    finally:
        server.close()


def test_isolation_reported() -> None:
    r = run(DOUBLE)
    for layer in (
        "bwrap", "userns", "pidns", "netns", "mountns", "cap_drop_all", "seccomp", "ro_minimal_root",
        "tmpfs_scratch", "fresh_proc", "unprivileged_host_uid", "rlimits", "wall_timeout", "env_scrubbed",
    ):  # fmt: skip
        assert layer in r.isolation, layer
    assert r.sandboxed and r.guarantee == "parent_judge"


def test_unsafe_opt_in_is_reported() -> None:
    r = run_tests(DOUBLE, TESTS, allow_unsafe_no_sandbox=True)
    assert r.passed  # bwrap works here, so the opt-in changes nothing
    assert r.sandboxed


IO_CASES = [
    ("exact", "print(int(input()) * 2)", [("3\n", "6\n"), ("5", "10")], True, "passed"),
    ("trailing_ws_ignored", "print(int(input()) * 2, end='  \\n\\n\\n')", [("3", "6")], True, "passed"),
    ("prefix_is_not_enough", "print(1)\nprint(2)\nprint(3)", [("", "1\n2\n")], False, "failed"),
    ("missing_line", "print(1)", [("", "1\n2\n")], False, "failed"),
    ("leading_ws_matters", "print(' 6')", [("", "6")], False, "failed"),
    ("sys_exit_0_after_output", "print(6)\nimport sys\nsys.exit(0)", [("", "6")], True, "passed"),
    (
        "os_exit_skips_signal",
        "import os, sys\nprint(6)\nsys.stdout.flush()\nos._exit(0)",
        [("", "6")],
        False,
        "no_signal",
    ),
    ("nonzero_exit", "print(6)\nimport sys\nsys.exit(3)", [("", "6")], False, "error"),
    (
        "stops_at_first_failure",
        "print(int(input()) + 1)",
        [("1", "2"), ("1", "3"), ("2", "3")],
        False,
        "failed",
    ),
]


@pytest.mark.parametrize(
    ("program", "cases", "passed", "status"), [c[1:] for c in IO_CASES], ids=[c[0] for c in IO_CASES]
)
def test_run_io(program: str, cases: list, passed: bool, status: str) -> None:
    r = run_io(program, cases, timeout_s=3.0)
    assert (r.passed, r.status) == (passed, status), r
    assert r.tests_total == len(cases)


def test_run_io_counts_and_empty() -> None:
    r = run_io("print(int(input()) + 1)", [("1", "2"), ("1", "3")])
    assert (r.tests_passed, r.tests_total) == (1, 2)
    assert run_io("print(1)", []).status == "error"


EXTRACT = [
    (
        "last_python_fence",
        "<think>```python\nbad()\n```</think>```python\nx = 1\n```\n```python\ny = 2\n```",
        "y = 2",
    ),
    ("in_answer_tags", "<think>r</think><answer>\n```py\nz = 3\n```\n</answer>", "z = 3"),
    ("untagged_fence", "</think>```\nw = 4\n```", "w = 4"),
    ("tagged_beats_untagged", "```python\na = 1\n```\n```\ntext\n```", "a = 1"),
    ("bare_answer_text", "<think>hm</think><answer>print(1)</answer>", "print(1)"),
    ("unterminated_think", "<think>```python\nx = 1\n```", None),
    ("code_only_in_think", "<think>```python\nx = 1\n```</think>", None),
    ("empty", "", None),
]


@pytest.mark.parametrize(("completion", "expected"), [c[1:] for c in EXTRACT], ids=[c[0] for c in EXTRACT])
def test_extract_code(completion: str, expected: str | None) -> None:
    assert extract_code(completion) == expected


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(program=st.text(max_size=60), tests=st.text(max_size=30))
def test_never_raises_on_arbitrary_text(program: str, tests: str) -> None:
    r = run_tests(program, tests, timeout_s=1.0)
    assert r.status in STATUSES and not (r.passed and r.tests_total == 0)


@settings(max_examples=30, deadline=None)
@given(st.text(max_size=200))
def test_extract_never_raises(text: str) -> None:
    out = extract_code(text)
    assert out is None or isinstance(out, str)


@pytest.mark.parametrize(
    ("program", "passed"),
    [
        ("import functools\n@functools.lru_cache(maxsize=None)\ndef f(x):\n    return 2 * x\n", True),
        ("import functools\ndef g(k, x):\n    return k * x\nf = functools.partial(g, 2)\n", True),
        ("class C:\n    def __call__(self, x): return 2 * x\nf = C()\n", True),
        # a callable instance used to pick the in-sandbox judge, returning an object that lies
        (ALWAYS_EQ + "class C:\n    def __call__(self, x): return A()\nf = C()\n", False),
    ],
    ids=["lru_cache", "partial", "callable_instance", "callable_instance_lying"],
)
def test_wrapped_functions_are_judged_in_the_parent(program: str, passed: bool) -> None:
    r = run(program)
    assert r.passed is passed and r.guarantee == "parent_judge", r
