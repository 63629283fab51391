"""Agreement with Math-Verify's own labelled regression cases (issue 12, item 6).

`data/math_verify_cases.jsonl` holds all 252 parametrized (gold, pred, expected) cases of
huggingface/Math-Verify's tests (commit and files in its first line), in our own table format.
Each prediction is graded as the final answer of an R1 completion.  Where rlvr deliberately
disagrees, the row names the reason (`difference`, a key of `_reasons`); the test checks that
every row still behaves as recorded, so an agreement gained or lost shows up as a failure here.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlvr.verifiers.math import verify_math_batch

TABLE = Path(__file__).with_name("data") / "math_verify_cases.jsonl"
MIN_AGREEMENT = 222


def _load() -> tuple[dict, list[dict]]:
    lines = TABLE.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def test_agreement_with_math_verify() -> None:
    header, rows = _load()
    assert len(rows) == 252
    got = verify_math_batch(
        [f"<think>work</think><answer>{r['pred']}</answer>" for r in rows], [r["gold"] for r in rows]
    )
    changed = [(r["id"], r["rlvr"], g) for r, g in zip(rows, got) if int(g or 0) != r["rlvr"]]
    assert not changed, f"rows whose verdict changed (id, recorded, now): {changed}"
    agree = sum(int(g or 0) == r["expected"] for r, g in zip(rows, got))
    assert agree >= MIN_AGREEMENT, agree
    for r in rows:
        assert ("difference" in r) == (r["rlvr"] != r["expected"]), r["id"]
        assert r.get("difference", "open") in header["_reasons"], r["id"]
