"""`rlvr demo --recipe distill`: the arms' statistics, and the quick plan through the real CLI (slow)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from rlvr.demo.distill import ARMS, DISTILL_PLANS, arms_summary, mean_se, table

REPO = Path(__file__).resolve().parents[2]


def test_mean_and_standard_error_by_hand() -> None:
    assert mean_se([0.5]) == {"mean": 0.5, "se": None, "n": 1}
    # values 0.4, 0.5, 0.9: mean 0.6, sample variance ((.2)^2 + (.1)^2 + (.3)^2) / 2 = 0.07, se = sqrt(0.07 / 3)
    out = mean_se([0.4, 0.5, 0.9])
    assert out["mean"] == pytest.approx(0.6) and out["se"] == pytest.approx(math.sqrt(0.07 / 3))


def test_arms_summary_and_table() -> None:
    row = lambda p: {"pass@1": p, "greedy_pass@1": p + 0.1, "trained_tokens": 1000}  # noqa: E731
    rows = {s: {"start": row(0.2), **{a: row(0.3 + 0.1 * i + 0.01 * s) for i, a in enumerate(ARMS)}} for s in (0, 1)}
    arms = arms_summary(rows)
    assert list(arms) == ["start", *ARMS] and arms["sft"]["per_seed"] == {"0": 0.4, "1": pytest.approx(0.41)}
    assert arms["rl"]["pass@1"]["mean"] == pytest.approx(0.305) and arms["rl"]["trained_tokens"] == 1000
    assert "on_policy" in table(arms)


def test_plans_keep_arms_at_equal_steps_and_the_teacher_larger() -> None:
    for plan in DISTILL_PLANS.values():
        assert plan.teacher_preset != plan.student_preset and plan.arm_steps > 0
    assert DISTILL_PLANS["quick"].teacher_key() != DISTILL_PLANS["full"].teacher_key()


@pytest.mark.slow
def test_cli_distill_demo_quick_end_to_end(tmp_path: Path) -> None:
    """The quick plan through the real CLI: teacher trained and cached, three arms, summary and report."""
    out, cache = tmp_path / "demo", tmp_path / "cache"
    cmd = [sys.executable, "-m", "rlvr.cli", "demo", "--recipe", "distill", "--quick", "--out", str(out),
           "--teacher-cache", str(cache), "--threads", "1"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"] == "distill" and summary["seeds"] == [0]
    assert set(summary["arms"]) == {"start", *ARMS}
    for arm in ARMS:
        assert 0.0 <= summary["arms"][arm]["pass@1"]["mean"] <= 1.0 and summary["arms"][arm]["trained_tokens"] > 0
        assert (out / "seed_0" / "eval" / f"{arm}.json").is_file()
    traces = [json.loads(x) for x in Path(summary["teacher"]["dir"]).with_name("traces.jsonl").read_text().splitlines()]
    assert traces and all(r["parts"]["accuracy"] == 1.0 for r in traces)
    assert "Arms, held-out" in (out / "report.html").read_text()
    assert "on_policy" in proc.stdout
