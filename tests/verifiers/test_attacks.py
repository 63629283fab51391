"""Issue 12's attack table: one or more cases per class; none may pass, and the parent is unaffected.

Every program below is a WRONG solution (its `f` never doubles) plus an attempt to forge the
verdict or reach the host.  "Parent unaffected": a witness file on the host is unchanged, no file
appears outside the sandbox, the secret in the parent's environment never shows up in any
output, and this process (and a canary child of it) is still alive.  WEAK rows use tests that
compare the program's own class, so they run in the in-sandbox judge, the weaker mode.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from rlvr.verifiers.code import extract_code, run_tests, sandbox_available
from rlvr.verifiers.countdown import verify_countdown
from rlvr.verifiers.format import think_answer_format
from rlvr.verifiers.math import verify_math

pytestmark = pytest.mark.skipif(
    not sandbox_available()[0], reason=f"no bwrap sandbox: {sandbox_available()[1]}"
)
SECRET = f"rlvr-secret-{uuid.uuid4().hex}"
TESTS = "assert f(2) == 4\nassert f(3) == 6\n"
WEAK_TESTS = "assert f(2) == N(4)\nassert f(3) == N(6)\n"
N_CLASS = "class N:\n    def __init__(s, v): s.v = v\n    def __eq__(s, o): return isinstance(o, N) and o.v == s.v\n"
WRONG = "def f(x):\n    return x\n"

ATTACKS = {
    # hook re-entry: code run while the audit hook inspects attacker objects
    "hook_str_subclass_import": "class S(str):\n    def startswith(s, *a): return False\n    def __str__(s): return 'json'\n"
    "try:\n    __import__(S('ctypes'))\nexcept Exception:\n    pass\n",
    "hook_patch_posixpath": "import posixpath\nposixpath.realpath = lambda p, **k: '/tmp/x'\nopen('/pwn', 'w')\n",
    "hook_forge_done_event": "import sys\ntry:\n    sys.audit('rlvr.done', 2, 2, 0)\nexcept Exception:\n    pass\n",
    # frame walking: reach the harness's locals (tests, comparator, nonce)
    "frame_signal_handler": "import signal, os\ndef h(s, fr):\n    while fr.f_back: fr = fr.f_back\n    fr.f_globals.clear()\n"
    "signal.signal(signal.SIGALRM, h)\nsignal.setitimer(signal.ITIMER_REAL, 0.01)\nimport time\ntime.sleep(0.1)\n",
    "frame_warnings_filename": "src = 'import sys\\nfr = sys._getframe(1)\\n'\nns = {}\n"
    "try:\n    exec(compile(src, __import__('warnings').__file__, 'exec'), ns)\nexcept Exception:\n    pass\n",
    "frame_traceback": "try:\n    1 / 0\nexcept Exception as e:\n    try:\n        e.__traceback__.tb_frame.f_back.f_locals.clear()\n    except Exception:\n        pass\n",
    # dir_fd-relative opens: /proc/self/mem and the parent's environment
    "dirfd_proc_mem": "import os\ntry:\n    d = os.open('/', os.O_RDONLY)\n    fd = os.open('proc/self/mem', os.O_RDONLY, dir_fd=d)\nexcept OSError:\n    pass\n",
    "dirfd_parent_environ": f"import os\nfound = False\nfor p in os.listdir('/proc'):\n    try:\n        found |= b'{SECRET}' in open('/proc/' + p + '/environ', 'rb').read()\n    except OSError:\n        pass\nprint('FOUND' if found else 'none')\n",
    "dirfd_create_outside": "import os\ntry:\n    d = os.open('/usr', os.O_RDONLY)\n    os.open('pwned', os.O_CREAT | os.O_WRONLY, dir_fd=d)\nexcept OSError:\n    pass\n",
    # root inside: remount, immutable scratch files, process limit, capabilities
    "root_remount_rw": "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.mount(None, b'/', None, 0x20 | 0x1000, None)\n"
    "try:\n    open('/pwned', 'w')\nexcept OSError:\n    pass\n",
    "root_immutable_scratch": "import fcntl, struct\nf = open('/tmp/keep', 'w')\ntry:\n    fcntl.ioctl(f, 0x40086602, struct.pack('l', 0x10))\nexcept OSError:\n    pass\n",
    "root_fork_bomb": "import os\nfor _ in range(10000):\n    try:\n        if os.fork() == 0:\n            import time\n            time.sleep(20)\n            os._exit(0)\n    except OSError:\n        break\n",
    "root_setuid": "import os\ntry:\n    os.setuid(0)\nexcept OSError:\n    pass\n",
    "root_unshare": "import ctypes\nctypes.CDLL(None).syscall(272, 0x10000000)\n",
    # host sockets and processes
    "host_unix_socket": "import socket\nfor path in ('/run/docker.sock', '/tmp/.X11-unix/X0', '/var/run/dbus/system_bus_socket'):\n"
    "    try:\n        socket.socket(socket.AF_UNIX).connect(path)\n    except OSError:\n        pass\n",
    "host_tcp_loopback": "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 22), timeout=0.5)\nexcept OSError:\n    pass\n",
    "kill_everything": "import os, signal\nfor pid in range(1, 400):\n    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n",
    # judge tricks: values that lie, protocol forgery
    "lying_eq": "class A:\n    def __eq__(s, o): return True\ndef f(x): return A()\n",
    "lying_str_subclass": "class S(str):\n    def __eq__(s, o): return True\n    __hash__ = str.__hash__\ndef f(x): return S('wrong')\n",
    "forge_reply_pipe": 'import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b\'{"ok": ["i", "4"]}\\n\' * 4)\n    except OSError:\n        pass\n',
}
WEAK_ATTACKS = {
    "weak_signal_frame": ATTACKS["frame_signal_handler"],
    "weak_warnings_filename": ATTACKS["frame_warnings_filename"],
    "weak_proc_mem": "open('/proc/self/mem', 'rb')\n",
    "weak_ctypes": "import ctypes\n",
    "weak_forge_done": 'import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b\'{"ev": "done", "nonce": "x", "counts": [2, 2, 0]}\\n\')\n    except OSError:\n        pass\n',
    "weak_lying_eq": "class A:\n    def __eq__(s, o): return True\n",
}


@pytest.fixture(scope="module")
def host_state():
    witness = f"/tmp/rlvr-witness-{uuid.uuid4().hex}"
    with open(witness, "w") as f:
        f.write("unchanged")
    canary = subprocess.Popen(["sleep", "600"])
    before = set(os.listdir("/tmp"))
    os.environ["RLVR_ATTACK_SECRET"] = SECRET
    yield witness, canary, before
    del os.environ["RLVR_ATTACK_SECRET"]
    canary.kill()
    os.unlink(witness)


def _check_host(host_state, r) -> None:
    witness, canary, before = host_state
    with open(witness) as f:
        assert f.read() == "unchanged"
    assert canary.poll() is None, "a host process was killed"
    assert not os.path.exists("/pwned") and not os.path.exists("/usr/pwned")
    assert not {n for n in set(os.listdir("/tmp")) - before if n in ("keep", "x", "pwned")}
    assert SECRET not in r.stdout_tail + r.stderr_tail + r.detail
    assert "FOUND" not in r.stdout_tail


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_does_not_pass(name: str, host_state) -> None:
    program = ATTACKS[name] + ("" if "def f(" in ATTACKS[name] else WRONG)
    r = run_tests(program, TESTS, timeout_s=5.0)
    assert not r.passed, r
    assert r.guarantee in ("parent_judge", ""), r
    _check_host(host_state, r)


@pytest.mark.parametrize("name", list(WEAK_ATTACKS))
def test_weak_mode_attack_does_not_pass(name: str, host_state) -> None:
    program = N_CLASS + WEAK_ATTACKS[name] + "def f(x):\n    return N(x)\n"
    r = run_tests(program, WEAK_TESTS, timeout_s=5.0)
    assert not r.passed, r
    _check_host(host_state, r)
    honest = run_tests(N_CLASS + "def f(x):\n    return N(2 * x)\n", WEAK_TESTS)
    assert honest.passed and honest.guarantee == "in_sandbox_judge", honest


def test_parser_dos_in_the_parent() -> None:
    start = time.perf_counter()
    for text in ("```" + " " * 24_000, "```" + " " * (1 << 20), "```python" + "\t" * (1 << 20) + "x"):
        extract_code(text)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize(
    ("answer", "gold"),
    [("3 \\cup 4", "4"), ("3 \\sim 4", "4"), ("3 \\Leftrightarrow 4", "4"), ("3 == 4", "4"), ("x := 3 == 4", "4"),
     ("\\begin{cases} 3 \\\\ 4 \\end{cases}", "4"), ("3 \\text{, } 4", "4"), ("3 \u2228 4", "4"), ("3 \\vert 4", "4"),
     ("3 \\quad 4", "4"), ("\\boxed{4} 3", "4"), ("x=4 \\text{ or } x=5", "x=4"), ("a + b = 4", "4"),
     ("x + 5 = 0", "-5"), ("\\neg 4", "4"), ("\\phantom{4}", "4")],
)  # fmt: skip
def test_math_hedges(answer: str, gold: str) -> None:
    assert verify_math(f"<think>w</think><answer>{answer}</answer>", gold) == 0.0


@pytest.mark.parametrize(
    "completion", ["<think>\u200b</think><answer>4</answer>", "<think>a</think><answer>\x00</answer>"]
)
def test_format_invisible_blocks(completion: str) -> None:
    assert think_answer_format(completion) == 0.0


def test_countdown_minus() -> None:
    assert verify_countdown("<answer>7 \u2212 3</answer>", [7, 3], 4) == 1.0
    assert (
        verify_countdown("<answer>\u22123 + 7</answer>", [7, 3], 4) == 0.0
    )  # no unary minus, whatever the glyph


# Issue 7b: attacks whose tests are not TESTS (the hole needs a test pattern to exploit).  Each
# row: (program, tests, honest program that must pass the same tests).
APPLY_TESTS = "assert apply(lambda x: x + 1, 1) == 2\nassert apply(lambda x: x * 3, 2) == 6\n"
HONEST_APPLY = "def apply(g, x):\n    return g(x)\n"
WEAK_APPLY_TESTS = "class Box:\n    def __init__(s, v): s.v = v\nassert get(Box(1)) == 2\nassert get(Box(5)) == 6\n"
HONEST_GET = "def get(b):\n    return b.v + 1\n"
PATTERN_ATTACKS = {
    # StopIteration raised into a C iterator ends it silently: zero cases checked, "passed"
    "stopiteration_all_map": (
        "def f(x):\n    raise StopIteration\n", "assert all(map(lambda x: f(x) == 2 * x, [2, 3]))\n", "def f(x):\n    return 2 * x\n",
    ),
    "stopiteration_for_map": (
        "def f(x):\n    raise StopIteration\n", "for r, e in zip(map(f, [2, 3]), [4, 6]):\n    assert r == e\n",
        "def f(x):\n    return 2 * x\n",
    ),
    "stopiteration_iter_sentinel": (
        "def f():\n    raise StopIteration\n", "for v in iter(f, None):\n    assert v == 1\n    break\nelse:\n    assert False\n",
        "def f():\n    return 1\n",
    ),
    # weak mode: a lambda (or an instance of a test class) leads to the tests' globals and builtins
    "weak_swap_comparator": (
        "def apply(g, x):\n    g.__globals__['__rlvr_cmp__'] = lambda *a: True\n    return 0\n", APPLY_TESTS, HONEST_APPLY,
    ),
    "weak_swap_builtin": (
        "def apply(g, x):\n    g.__builtins__['all'] = lambda *a: True\n    return 0\n",
        "assert apply(lambda x: x, 0) == 0\nassert all([apply(lambda x: x + 1, 1) == 2])\n", HONEST_APPLY,
    ),
    "weak_swap_test_helper": (
        "def get(b):\n    type(b).__init__.__globals__['check'] = lambda *a: None\n    return 0\n",
        "class Box:\n    def __init__(s, v): s.v = v\ndef check(v):\n    assert v == 6\nassert get(Box(0)) == 0\ncheck(get(Box(5)))\n",
        "def get(b):\n    return b.v + 1 if b.v else 0\n",
    ),
    "weak_stopiteration_map": (
        "def get(b):\n    raise StopIteration\n", "class Box:\n    def __init__(s, v): s.v = v\n"
        "assert all(map(lambda b: get(b) == b.v + 1, [Box(1), Box(5)]))\n", HONEST_GET,
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(PATTERN_ATTACKS))
def test_pattern_attack_does_not_pass(name: str, host_state) -> None:
    program, tests, honest = PATTERN_ATTACKS[name]
    r = run_tests(program, tests, timeout_s=5.0)
    assert not r.passed, r
    _check_host(host_state, r)
    good = run_tests(honest, tests, timeout_s=5.0)
    assert good.passed, good


FLOOD = "M = (1 << 61) - 1\ndef f(n):\n    return [k * M for k in range(n)]\n"  # every item hashes to 0


@pytest.mark.parametrize(
    "tests", ["assert set(f(N)) == {0}\n", "assert len(dict.fromkeys(f(N))) == 1\n"]
)
def test_hash_flooding_cannot_stall_the_parent(tests: str) -> None:
    # the list costs the sandbox O(n); a set of it costs the parent O(n^2): 200k items were minutes
    start = time.monotonic()
    r = run_tests(FLOOD, tests.replace("N", "200_000"), timeout_s=5.0)
    assert not r.passed and r.status == "failed", r
    assert time.monotonic() - start < 8.0
    honest = run_tests("def f(n):\n    return [0] * n\n", tests.replace("N", "200_000"), timeout_s=5.0)
    assert honest.passed, honest  # equal values share a hash honestly: not flooding


SWAP_AND_RESTORE = (
    "state = {}\ndef apply(g, x):\n    G = g.__globals__\n    if 'orig' not in state:\n        state['orig'] = G.get('__rlvr_cmp__')\n"
    "        def fake(*a):\n            G['__rlvr_cmp__'] = state['orig']\n            return True\n        state['fake'] = fake\n"
    "    G['__rlvr_cmp__'] = state['fake']\n    return g(x) if x == 1 else 0\n"
)
CHECK_TESTS = (
    "def check(candidate):\n    assert candidate(lambda x: x + 1, 1) == 2\n    assert candidate(lambda x: x * 3, 2) == 6\n"
    "    assert candidate(lambda x: x - 1, 2) == 1\ncheck(apply)\n"
)
WEAK_GUARD_ATTACKS = {
    # the harness's own exit, rebound so that a void run carries on
    "rebind_os_exit": "import os\nos._exit = lambda *a: None\ndef apply(g, x):\n    g.__globals__['__rlvr_cmp__'] = lambda *a: True\n"
    "    return g(x) if x == 1 else 0\n",
    # swap the comparator and undo the swap from inside the fake, within one check() statement
    "swap_and_restore_comparator": SWAP_AND_RESTORE,
    # read the tests' constants (the expected values) and code through a lambda they passed
    "read_test_code": "def apply(g, x):\n    return g.__code__.co_consts[-1] if x == 2 else g(x)\n",
    "read_test_defaults": "def apply(g, x):\n    g.__defaults__\n    return g(x) if x == 1 else 0\n",
}  # fmt: skip


@pytest.mark.parametrize("name", list(WEAK_GUARD_ATTACKS))
def test_weak_mode_tests_objects_cannot_be_turned(name: str, host_state) -> None:
    r = run_tests(WEAK_GUARD_ATTACKS[name], CHECK_TESTS, timeout_s=5.0)
    assert not r.passed, r
    assert r.guarantee == "in_sandbox_judge", r
    _check_host(host_state, r)
    honest = run_tests(HONEST_APPLY, CHECK_TESTS, timeout_s=5.0)
    assert honest.passed, honest


def test_weak_mode_guard_keeps_test_semantics() -> None:
    # the tests' own globals (rebound by a `global` statement, loop variables), super(), builtins
    tests = (
        "count = 0\ndef bump():\n    global count\n    count += 1\n    return count\n"
        "class Base:\n    def who(self): return 'base'\nclass Kid(Base):\n    def who(self): return super().who() + '!'\n"
        "for i in range(200):\n    assert apply(lambda x: x + i, 0) == i\n    bump()\n"
        "assert count == 200 and Kid().who() == 'base!'\nassert sorted(map(lambda x: apply(abs, x), [-2, 1])) == [1, 2]\n"
        "try:\n    apply(lambda x: 1 // x, 0)\n    assert False\nexcept ZeroDivisionError:\n    pass\n"
    )
    r = run_tests(HONEST_APPLY, tests, timeout_s=5.0)
    assert r.passed and r.guarantee == "in_sandbox_judge", r


def test_weak_mode_program_cannot_read_the_tests_globals_through_their_lambda() -> None:
    # `__globals__` raises no audit event in CPython 3.11: a lambda the tests passed led to CASES
    program = "def apply(g, x):\n    for args, want in g.__globals__['CASES']:\n        if args[1] == x:\n            return want\n"
    tests = "CASES = [((lambda x: x + 1, 1), 2), ((lambda x: x * 3, 2), 6)]\nfor args, want in CASES:\n    assert apply(*args) == want\n"
    r = run_tests(program, tests, timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r
    assert run_tests(HONEST_APPLY, tests, timeout_s=5.0).passed
    gen = "g.__closure__[0].cell_contents.__self__"  # the proxy's generator, which holds the lambda
    for walk in (f"{gen}.gi_frame.f_locals['fn']", f"{gen}.gi_code", "g.__globals__['CASES']"):
        probe = f"def apply(g, x):\n    try:\n        {walk}\n        return 'leaked'\n    except Exception:\n        return g(x)\n"
        assert run_tests(probe, tests, timeout_s=5.0).passed, walk


def test_weak_mode_program_cannot_read_the_tests_globals_through_their_instance() -> None:
    program = "def get(b):\n    return type(b).__init__.__globals__['WANT'][b.v]\n"
    tests = "WANT = {1: 2, 5: 6}\nclass Box:\n    def __init__(s, v): s.v = v\nassert get(Box(1)) == 2\nassert get(Box(5)) == 6\n"
    assert not run_tests(program, tests, timeout_s=5.0).passed
