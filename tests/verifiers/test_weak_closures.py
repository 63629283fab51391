"""Weak mode: what the tests' nested functions capture, the builtins they read and the fallback to
one namespace (`_weak_guard`): a program given one of their objects reads none of their values."""

from __future__ import annotations

import pytest

from rlvr.verifiers.code import run_tests, sandbox_available

pytestmark = pytest.mark.skipif(not sandbox_available()[0], reason="bubblewrap sandbox not available")

BOX = "class Box:\n    def __init__(s, v): s.v = v\n"
# a class and a lambda defined inside the test function capture its local `want`
NESTED = (
    "def check(candidate):\n    want = {1: 2, 5: 6}\n"
    "    class B:\n        def __init__(s, v): s.v = v\n        def w(s): return want\n"
    "    assert candidate(B(1), {'f': lambda: want}) == 2\n    assert candidate(B(5), {'f': lambda: want}) == 6\n"
    "check(get)\n"
)
CLOSURE_READS = {
    "method_closure": "def get(b, d):\n    return type(b).w.__closure__[0].cell_contents[b.v]\n",
    "bound_method": "def get(b, d):\n    return b.w.__func__.__closure__[0].cell_contents[b.v]\n",
    "lambda_in_dict": "def get(b, d):\n    return d['f'].__closure__[0].cell_contents[b.v]\n",
    "getclosurevars": "import inspect\ndef get(b, d):\n    return inspect.getclosurevars(d['f']).nonlocals['want'][b.v]\n",
    "dynamic_name": "def get(b, d):\n    c = getattr(d['f'], '__clo' + 'sure__')[0]\n    return getattr(c, 'cell_' + 'contents')[b.v]\n",
}


@pytest.mark.parametrize("name", list(CLOSURE_READS))
def test_what_a_test_function_captures_is_not_readable(name: str) -> None:
    r = run_tests(CLOSURE_READS[name], NESTED, timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r


def test_honest_programs_keep_nested_semantics() -> None:
    honest = "def get(b, d):\n    return {1: 2, 5: 6}[b.v] if b.w() is d['f']() else -1\n"
    r = run_tests(honest, NESTED, timeout_s=5.0)
    assert r.passed and r.guarantee == "in_sandbox_judge", r
    tests = (  # nonlocal, a parameter captured, a comprehension, super() (the `__class__` cell)
        "def check(candidate, k=3):\n    n = 0\n    def bump():\n        nonlocal n\n        n += k\n        return n\n"
        "    class A:\n        def v(s): return 1\n    class B(A):\n        def v(s): return super().v() + n\n"
        "    bump()\n    assert candidate(B(), bump) == 9\n    assert [n + i for i in range(2)] == [6, 7]\n"
        "check(get)\n"
    )
    r = run_tests("def get(b, f):\n    return b.v() + f() - 3 + 2\n", tests, timeout_s=5.0)
    assert r.passed and r.guarantee == "in_sandbox_judge", r


LEAK = "def get(b):\n    g = type(b).__init__.__globals__\n    return next(v for v in g.values() if isinstance(v, dict) and 1 in v)[b.v]\n"
FALLBACK = {
    "global_statement": "WANT = {1: 2}\nN = 0\ndef bump():\n    global N\n    N += 1\n    return N\n"
    + BOX + "assert bump() == 1 and get(Box(1)) == 2 and N == 1\n",
    "class_body_read": "WANT = {1: 2}\nSCALE = 1\nclass Box:\n    K = SCALE\n    def __init__(s, v): s.v = v * s.K\n"
    "assert get(Box(1)) == 2\n",
}


@pytest.mark.parametrize("name", list(FALLBACK))
def test_global_statements_and_class_bodies_keep_the_split_namespace(name: str) -> None:
    r = run_tests(LEAK, FALLBACK[name], timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r
    r = run_tests("def get(b):\n    return b.v + 1\n", FALLBACK[name], timeout_s=5.0)
    assert r.passed and r.guarantee == "in_sandbox_judge", r


def test_replacing_what_a_cell_holds_voids_the_run() -> None:
    # before: the program could set the tests' `want` to its own answer through the cell
    program = "def get(b, d):\n    d['f'].__closure__[0].cell_contents = {1: 0, 5: 0}\n    return 0\n"
    tests = NESTED.replace("lambda: want}) == 2", "lambda: want}) == want[1]").replace("== 6", "== want[5]")
    r = run_tests(program, tests, timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r


UNSUPPORTED = {  # forms the rewrite leaves as they are (their cells stay readable): still correct
    "lambda_owns_a_cell": "def check(c):\n    mk = lambda x: lambda: x\n    assert c(mk(2)) == 2\ncheck(get)\n",
    "match": "def check(c):\n    match [2]:\n        case [w]:\n            f = lambda: w\n    assert c(f) == 2\ncheck(get)\n",
}


@pytest.mark.parametrize("name", list(UNSUPPORTED))
def test_forms_left_as_they_are_keep_their_semantics(name: str) -> None:
    r = run_tests("def get(f):\n    return f()\n", UNSUPPORTED[name], timeout_s=5.0)
    assert r.passed and r.guarantee == "in_sandbox_judge", r


def test_a_name_planted_in_the_reachable_builtins_is_not_read_by_the_tests() -> None:
    program = "def get(b):\n    type(b).__init__.__builtins__['helper'] = lambda: 2\n    return 2\n"
    tests = BOX + "def t():\n    try:\n        return helper()\n    except NameError:\n        return -1\nassert get(Box(1)) == t()\n"
    r = run_tests(program, tests, timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r


def test_global_statements_keep_their_semantics() -> None:
    tests = (
        "N = 0\nL = []\ndef bump(k=1):\n    global N, L\n    N += k\n    L = L + [N]\n    for N in range(N, N + 1):\n        pass\n"
        "    def inner():\n        return N\n    return inner()\n"
        + BOX + "class C:\n    K = N\n    def k(s): return N\n"
        "assert bump() == 1 and bump(2) == 3 and N == 3 and L == [1, 3] and C.K == 0 and C().k() == 3\n"
        "assert get(Box(N)) == 4\n"
    )
    r = run_tests("def get(b):\n    return b.v + 1\n", tests, timeout_s=5.0)
    assert r.passed and r.guarantee == "in_sandbox_judge", r


def test_moving_one_of_the_tests_boxes_into_another_cell_voids_the_run() -> None:
    # the helper `ok` reads `want` through the cell that `B.w` shares: the program puts `inp`'s box there
    tests = (
        "def check(c):\n    inp = 3\n    want = 5\n    class B:\n        def i(s): return inp\n"
        "        def w(s): return want\n    def ok(x): return x == want\n    assert ok(c(B()))\ncheck(get)\n"
    )
    program = (
        "def get(b):\n    ci, cw = type(b).i.__closure__[0], type(b).w.__closure__[0]\n"
        "    cw.cell_contents = ci.cell_contents\n    return 3\n"
    )
    r = run_tests(program, tests, timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r
    assert run_tests("def get(b):\n    return b.i() + 2\n", tests, timeout_s=5.0).passed


@pytest.mark.xfail(strict=True, reason="open: a nested function reads its box through a cell the program can refill "
                   "with the same name's box from an earlier call (the owner's own reads are safe)")
def test_a_box_from_an_earlier_call_put_into_a_later_calls_cell_voids_the_run() -> None:
    tests = (
        "def check(c, want):\n    class B:\n        def w(s): return want\n    def ok(x): return x == want\n"
        "    assert ok(c(B()))\ncheck(get, 1)\ncheck(get, 2)\n"
    )
    program = (
        "S = []\ndef get(b):\n    cell = type(b).w.__closure__[0]\n"
        "    if S:\n        cell.cell_contents = S[0]\n    else:\n        S.append(cell.cell_contents)\n    return 1\n"
    )
    r = run_tests(program, tests, timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r
