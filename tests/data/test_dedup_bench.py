"""Smoke test of bench/dedup_bench.py at 2k rows: it runs and reports throughput and peak memory."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_at_2k_rows(tmp_path):
    pytest.importorskip("datasketch")
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "dedup_bench.py"), "--rows", "2000", "--workers", "2",
         "--dir", str(tmp_path), "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["rows"] == 2000 and result["rows_per_s"] > 0 and result["peak_rss_mb"]["main"] > 0
    assert 0 < result["dropped"] <= result["planted"]["near"] + result["planted"]["exact"]
    assert result["kept"] + result["dropped"] == 2000
