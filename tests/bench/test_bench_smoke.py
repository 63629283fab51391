"""Smoke test of the GRPO benchmark harness (bench/grpo_bench.py --quick): it runs end to end.

Slow (several subprocesses that import torch, transformers and TRL): run with --runslow.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_benchmark_runs_and_prints_the_speedup_line(tmp_path: Path) -> None:
    pytest.importorskip("trl", reason="the benchmark compares against TRL: pip install 'trl==1.16.0'")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "grpo_bench.py"),
            "--quick",
            "--steps",
            "1",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"speedup_vs_trl=(nan|\d+\.\d+)", last), last
    report = json.loads(out.read_text())
    trl_sides = [k for k in report["sides"] if k.startswith("trl-")]
    assert len(trl_sides) == 1, trl_sides  # quick: TRL's best setting only (bf16 where it is native)
    trl = report["sides"][trl_sides[0]]
    assert trl["fixed_length_ok"], trl  # min_new_tokens really forced 16-token completions
    assert trl["median"]["step"] > 0
    if "median" in report["sides"]["rlvr"]:  # rlvr's trainer present: its completions are fixed-length too
        assert report["sides"]["rlvr"]["fixed_length_ok"]
        assert last != "speedup_vs_trl=nan"
