"""`rlvr data`: the user's input errors are one `error:` line (exit 2); a bug in rlvr is not dressed up as
one: it keeps its traceback, framed as a bug (exit 1), as in the main CLI."""

from __future__ import annotations

import subprocess
import sys

from tests.cli.helpers import REPO, assert_user_error, rlvr

BUGGY = """
import sys
import rlvr.data.duplicates as d
def dedup_file(*args, **kwargs):
    raise ValueError("an index off by one")  # a bug inside the library, not the user's input
d.dedup_file = dedup_file
from rlvr.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_value_error_inside_the_library_keeps_its_traceback(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"p": "a"}\n')
    proc = subprocess.run([sys.executable, "-c", BUGGY, "data", "dedup", str(rows), "--field", "p"], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" in proc.stderr and "an index off by one" in proc.stderr
    assert "is a bug in rlvr" in proc.stderr and "error: an index" not in proc.stderr


def test_flag_and_range_mistakes_are_still_user_errors(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"p": "a"}\n')
    out = str(tmp_path / "o.jsonl")
    assert_user_error(rlvr("data", "dedup", str(rows), "--field", "p", "--out", out, "--bands", "4"),
                      "rlvr data dedup: error:", "bands and rows")  # fmt: skip
    assert_user_error(rlvr("data", "decontam", str(rows), "--field", "p", "--eval", str(rows), "--n", "2",
                           "--min-tokens", "5", "--out", out), "min_tokens (5) must be at most n (2)")  # fmt: skip
    assert_user_error(rlvr("data", "filter-difficulty", "--model", str(tmp_path), "--input", str(rows),
                           "--keep", "(1, 0)"), "--keep '(1, 0)'", "0 <= low <= high <= 1")  # fmt: skip
    assert_user_error(rlvr("data", "filter-difficulty", "--model", str(tmp_path), "--input", str(rows),
                           "--task-kwargs", '{"prompt_field": 3}'), "--task-kwargs prompt_field")  # fmt: skip
    proc = rlvr("data", "filter-difficulty", "--model", str(tmp_path), "--input", str(rows), "--k", "0")
    assert proc.returncode == 2 and "--k" in proc.stderr and "positive integer" in proc.stderr
