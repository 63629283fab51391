"""Tolerant readers of the run directory and the pure helpers behind the report (hand-derived numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlvr.report.load import as_float, load_run, metric_series
from rlvr.report.plots import other_keys, smooth
from rlvr.report.sections import fmt, fmt_seconds, pick_samples, summary_table


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(1, 1.0), (0.5, 0.5), (True, 1.0), ("0.25", 0.25), ({"value": 2}, 2.0), ("high", None),
     (None, None), (float("nan"), None), (float("inf"), None), ([1], None), ({"x": 1}, None)],
)  # fmt: skip
def test_as_float(raw, expected):
    assert as_float(raw) == expected


def test_metric_series_skips_non_numeric_and_keeps_last_row_of_a_repeated_step():
    rows = [
        {"step": 1, "kl": 0.1, "phase": "grpo", "nested": {"a": 1}},
        {"step": 2, "kl": None, "entropy": float("nan")},
        {"step": 1, "kl": 0.3},  # resumed run re-logs step 1: the whole newer row wins
        {"kl": 0.4},  # no step: its position in the file (4)
    ]
    series = metric_series(rows)
    assert series == {"kl": ([1.0, 4.0], [0.3, 0.4])}


def test_truncated_last_line_and_bad_middle_line_are_noted_not_fatal(tmp_path):
    good = json.dumps({"step": 1, "reward/total": 0.5})
    _write(tmp_path / "metrics.jsonl", f"{good}\nnot json\n\n[1, 2]\n{good[:-4]}")
    run = load_run(tmp_path)
    assert run.metrics["reward/total"] == ([1.0], [0.5])
    joined = " ".join(run.notes)
    assert "line 2 is not valid JSON" in joined
    assert "line 4 is not a JSON object" in joined
    assert "last line (truncated write?)" in joined


def test_load_run_missing_dir_raises_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_run(tmp_path / "nope")


def test_bad_json_files_become_notes(tmp_path):
    _write(tmp_path / "config.json", "{oops")
    _write(tmp_path / "summary.json", "[1, 2]")
    _write(tmp_path / "eval" / "x.json", '{"no_metrics": 1}')
    run = load_run(tmp_path)
    assert run.config is None and run.summary is None and run.evals == {}
    assert len(run.notes) == 3


def test_eval_files_order_before_natural_after(tmp_path):
    for name in ("after", "step_10", "before", "step_2"):
        _write(tmp_path / "eval" / f"{name}.json", '{"metrics": {"pass@1": 0.5}}')
    assert list(load_run(tmp_path).evals) == ["before", "step_2", "step_10", "after"]


def test_skipped_steps_and_run_name(tmp_path):
    _write(tmp_path / "metrics.jsonl", '{"step": 1, "skipped": 0}\n{"step": 2, "skipped": 1}\n')
    _write(tmp_path / "config.json", '{"run_name": "demo-7"}')
    run = load_run(tmp_path)
    assert run.skipped_steps == [2.0]
    assert run.name == "demo-7"


def test_smooth_is_a_debiased_ema():
    assert smooth([3.0] * 30) == pytest.approx([3.0] * 30)
    # n = 30 -> span 3 -> w = 1 - 2/4 = 0.5: y1 = 0.5*2 / (1-0.5) = 2; y2 = (0.5*1 + 0.5*4) / (1-0.25) = 10/3
    out = smooth([2.0, 4.0] + [0.0] * 28)
    assert out[:2] == pytest.approx([2.0, 10 / 3])
    assert smooth([0.0, 10.0]) == [0.0, 10.0]  # n = 2 -> span 1 -> w = 0: no smoothing


def test_other_keys_lists_metrics_no_panel_shows():
    m = {"step": ([1], [1]), "kl": ([1], [1]), "my/custom": ([1], [2]), "skipped": ([1], [0])}
    assert other_keys(m, shown={"kl"}) == ["my/custom"]


def test_pick_samples_takes_latest_steps_and_ranks_by_reward():
    rows = [
        {"step": 1, "reward": 9.0},  # old step: not needed once the latest steps give 2k rows
        {"step": 2, "reward": 0.5, "id": "a"},
        {"step": 2, "reward": None, "id": "unranked"},
        {"step": 3, "reward": 1.2, "id": "b"},
        {"step": 3, "reward": 0.0, "id": "c"},
    ]
    best, worst, steps = pick_samples(rows, k=1)
    assert [r["id"] for r in best] == ["b"] and [r["id"] for r in worst] == ["c"] and steps == [3.0]
    best, worst, steps = pick_samples(rows, k=2)  # needs 4 rows: steps 3, 2, 1 (3 ranked rows + 1)
    assert [r["reward"] for r in best] == [9.0, 1.2]
    assert [r["reward"] for r in worst] == [0.0, 0.5]
    assert steps == [1.0, 2.0, 3.0]


def test_pick_samples_never_shows_a_row_twice():
    best, worst, _ = pick_samples([{"step": 1, "reward": 1.0}, {"step": 1, "reward": 0.0}], k=3)
    assert [r["reward"] for r in best] == [1.0, 0.0] and worst == []


def test_summary_table_deltas_in_points_and_length_neutral():
    html = summary_table(
        {"before": {"pass@1": 0.312, "mean_length": 93.1}, "after": {"pass@1": 0.648, "mean_length": 61.4}}
    )
    # 0.648 - 0.312 = 0.336 -> "+33.6 pts" (improvement: class up); 61.4 - 93.1 = -31.7, no colour
    assert "<td>31.2%</td><td>64.8%</td><td class='up'>+33.6 pts</td>" in html
    assert "<td>93.1</td><td>61.4</td><td>-31.7</td>" in html


def test_number_formatting():
    assert fmt(None) == "—" and fmt(3.0) == "3" and fmt(0.123456) == "0.1235" and fmt(12345.67) == "12,345.7"
    assert fmt_seconds(412.7) == "6m 53s" and fmt_seconds(42) == "42s" and fmt_seconds(3720) == "1h 02m"
