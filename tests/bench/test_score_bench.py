"""bench/score_bench.py: its FLOP count against hand-derived numbers, and (slow) one run on the demo batch."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _module():
    sys.path.insert(0, str(ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("score_bench", ROOT / "bench" / "score_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_flops_of_the_shared_and_plain_paths():
    mod = _module()
    shape = mod.Shape(hidden=4, layers=1, heads=1, kv_heads=1, intermediate=2, vocab=10)
    n = 2 * (2 * 16 + 2 * 16 + 3 * 8 + 40)  # 2·N, N = q,k,v,o (16 each) + gate,up,down (8 each) + lm_head 40
    attn = 2 * 1 * 4
    prompts, comps = [[1, 2], [1, 2], [3]], [[5, 6, 7], [8], []]
    plain = n * 5 + attn * 25 + n * 3 + attn * 9 + n * 1 + attn * 1
    # prompts [1, 2] and [3] once; row 0 runs 2 of its 3 tokens after 2 cached ones, row 1 none, row 2 none
    shared = n * 2 + attn * 4 + n * 1 + attn * 1 + n * 2 + attn * (16 - 4)
    assert mod._flops(shape, prompts, comps, False) == plain
    assert mod._flops(shape, prompts, comps, True) == shared


@pytest.mark.slow
def test_score_bench_runs_on_the_demo_batch(tmp_path):
    out = tmp_path / "s.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "score_bench.py"), "--batch", "demo", "--repeats", "1",
                           "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    r = json.loads(out.read_text())["demo"]
    assert r["rows"] == 128 and r["distinct_prompts"] == 16 and r["max_abs_logprob_diff"] < 1e-5
    assert 0 < r["flops_saved"] < 1 and r["shared_s"] > 0
