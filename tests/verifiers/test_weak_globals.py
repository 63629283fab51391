"""Weak mode: the tests' own functions and classes have empty globals (`_weak_guard.public_globals`),
so an instance the tests hand the program does not lead to their bindings, and changing those
globals (or their class) voids the run."""

from __future__ import annotations

import pytest

from rlvr.verifiers.code import run_tests, sandbox_available

pytestmark = pytest.mark.skipif(not sandbox_available()[0], reason="bubblewrap sandbox not available")

BOX = "WANT = {1: 2, 5: 6}\nclass Box:\n    def __init__(s, v): s.v = v\n"
TESTS = BOX + "assert get(Box(1)) == 2\nassert get(Box(5)) == 6\n"
ATTACKS = {
    "enumerate_globals": "def get(b):\n    g = type(b).__init__.__globals__\n"
    "    return next(v for v in g.values() if isinstance(v, dict) and 1 in v)[b.v]\n",
    "dict_get_bypasses_missing": "def get(b):\n    return dict.get(type(b).__init__.__globals__, 'WANT')[b.v]\n",
    "vars_of_class_methods": "def get(b):\n    return [f for f in vars(type(b)).values() if callable(f)][0].__globals__['WANT'][b.v]\n",
}
PLANT = {  # program code that changes the globals the tests' helper reads `all` through
    "plant_builtin": "def get(b):\n    type(b).__init__.__globals__['all'] = lambda *a: True\n    return 0\n",
    "swap_class": "def get(b):\n    class E(dict):\n        def __missing__(self, k):\n            return lambda *a: True\n"
    "    g = type(b).__init__.__globals__\n    g.__class__ = E\n    return 0\n",
    "patch_missing": "def get(b):\n    g = type(b).__init__.__globals__\n"
    "    type(g).__missing__ = lambda self, k: (lambda *a: True)\n    return 0\n",
}
HELPER_TESTS = BOX + "def check(x, want):\n    return all([x == want])\nassert check(get(Box(1)), 2)\n"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_an_instance_of_a_test_class_does_not_lead_to_the_tests_bindings(name: str) -> None:
    r = run_tests(ATTACKS[name], TESTS, timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r


@pytest.mark.parametrize("name", list(PLANT))
def test_changing_the_tests_globals_voids_the_run(name: str) -> None:
    r = run_tests(PLANT[name], HELPER_TESTS, timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r


def test_honest_programs_keep_the_tests_semantics() -> None:
    program = "def get(b):\n    return b.v * 2 if b.v == 1 else b.v + 1\n"
    assert run_tests(program, TESTS, timeout_s=5.0).passed
    tests = (
        "SCALE = 3\nclass Box:\n    def __init__(s, v): s.v = v * SCALE\n    def twice(s): return Box(s.v * 2 // SCALE)\n"
        "def check(x):\n    return all(x == k * SCALE for k in [1])\n"
        "assert check(get(Box(1)))\nassert [get(b) for b in [Box(1)]] == [3]\nassert get(Box(1).twice()) == 6\n"
        "assert __name__ == 'tests' and Box.__module__ == 'tests'\n"
    )
    r = run_tests("def get(b):\n    return b.v\n", tests, timeout_s=5.0)
    assert r.passed and r.guarantee == "in_sandbox_judge", r
    class_body = "SCALE = 3\nclass Box:\n    K = SCALE\n    def __init__(s, v): s.v = v * s.K\nassert get(Box(1)) == 3\n"
    assert run_tests("def get(b):\n    return b.v\n", class_body, timeout_s=5.0).passed  # GLOBAL_GET


READS = [
    "g['WANT']", "g.__getitem__('WANT')", "type(g).__missing__(g, 'WANT')",
    "type(g).__missing__.__closure__[0].cell_contents.__self__.send('WANT')",
    "__import__('operator').getitem(g, 'WANT')",
]  # fmt: skip


@pytest.mark.parametrize("read", READS)
def test_a_name_the_tests_functions_read_is_not_answered_to_the_program(read: str) -> None:
    tests = BOX + "def want(v):\n    return WANT[v]\nassert get(Box(1)) == want(1)\nassert get(Box(5)) == want(5)\n"
    program = (
        "def get(b):\n    g = type(b).__init__.__globals__\n    try:\n"
        f"        return {read}[b.v]\n    except Exception:\n        return -1\n"
    )
    r = run_tests(program, tests, timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r
    assert run_tests("def get(b):\n    return b.v + 1\n", tests, timeout_s=5.0).passed  # the tests still read it


def test_a_proxied_test_function_can_be_re_entered() -> None:
    # the program keeps the proxy and calls it again from inside the test function's own call
    program = "G = []\ndef start(f, n):\n    G.append(f)\n    return f(n)\ndef again(n):\n    return G[0](n)\n"
    tests = "def step(n):\n    return 0 if n == 0 else 1 + again(n - 1)\nassert start(step, 3) == 3\n"
    r = run_tests(program, tests, timeout_s=5.0)
    assert r.passed and r.guarantee == "in_sandbox_judge", r


SWAP_BACK = """
class O:
    def __init__(s, b):
        s.bi = type(b).__init__.__builtins__
        s.real = s.bi['all']
    def __getattr__(s, k):
        if k == 'a':
            s.bi['all'] = lambda *x: True
            return True
        s.bi['all'] = s.real
        return False
def get(b):
    return O(b)
"""


SWAPPED = {  # `o.a` swaps the tests' `all` before it is read, `o.b` puts it back before the call's check
    "top_level": "class Box:\n    def __init__(s, v): s.v = v\no = get(Box(1))\nassert o.a and all([o.b])\n",
    "inside_a_test_function": "class Box:\n    def __init__(s, v): s.v = v\n"
    "def t(o):\n    return o.a and all([o.b])\nassert t(get(Box(1)))\n",
}


@pytest.mark.parametrize("where", list(SWAPPED))
def test_a_swap_undone_between_the_lookup_and_the_next_check_is_seen(where: str) -> None:
    r = run_tests(SWAP_BACK, SWAPPED[where], timeout_s=5.0)
    assert not r.passed and r.guarantee == "in_sandbox_judge", r
