"""The run report renders from recorded runs, degrades gracefully, escapes model text, stays offline."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import rlvr.report.html as report_html
from rlvr.report import render_report, write_report

FIXTURE = Path(__file__).parent / "fixtures" / "run30"
PANEL_TITLES = (
    "Reward by part", "Training accuracy", "Held-out evaluation", "KL to the reference", "Entropy", "Response length",
    "Clip fractions", "Importance ratio", "Gradient norm", "Loss", "Sampler / trainer mismatch", "Throughput",
    "Time per step", "Learning rate", "Zero-variance groups", "Advantage distribution",
)  # fmt: skip
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:|//)""", re.IGNORECASE)


@pytest.fixture(scope="module")
def fixture_html() -> str:
    return render_report(FIXTURE)


def _run(tmp_path: Path, metrics: list[dict] | None = None, **files: object) -> Path:
    if metrics is not None:
        (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metrics))
    for name, content in files.items():
        if isinstance(content, list):  # a JSONL file (samples)
            (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in content))
        else:
            (tmp_path / f"{name}.json").write_text(
                content if isinstance(content, str) else json.dumps(content)
            )
    return tmp_path


def test_recorded_run_renders_every_section_and_panel(fixture_html):
    html = fixture_html
    assert "<title>rlvr report · countdown-grpo-5m</title>" in html
    for section in ("overview", "evaluation", "curves", "samples", "config"):
        assert f"<section id='{section}'>" in html and f"href='#{section}'" in html
    for title in PANEL_TITLES:
        assert f"<h3>{title}</h3>" in html, title
    assert html.count("<svg") == len(PANEL_TITLES)  # every metric in the fixture has a panel: no "Other"
    assert "+33.6 pts" in html  # pass@1 0.312 -> 0.648 from summary.json
    assert "95% CI [0.5818, 0.7142]" in html  # eval/after.json
    assert html.index("<th>before</th>") < html.index("<th>after</th>")
    assert "&quot;kl_coef&quot;: 0.01" in html  # the config, pretty-printed
    assert "<h3>Best</h3>" in html and "<h3>Worst</h3>" in html and "accuracy 1" in html


def test_recorded_run_is_offline_and_script_free(fixture_html):
    assert "http://" not in fixture_html and "https://" not in fixture_html
    assert not EXTERNAL.search(fixture_html)
    assert "<script" not in fixture_html.lower() and "<link" not in fixture_html.lower()


def test_completion_with_markup_is_escaped(fixture_html, tmp_path):
    # the fixture's worst sample at step 30 contains a <script> tag
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; 1 &lt; 2" in fixture_html
    evil = '<img src="https://evil.example/x.png" onerror="alert(1)"></pre><script>alert(2)</script>'
    samples = [{"step": 1, "prompt": evil, "completion": evil, "reward": 1.0, "parts": {"<b>": 1}}]
    html = render_report(
        _run(tmp_path, [{"step": 1, "reward/total": 1.0}], samples=samples, config={"k": evil})
    )
    assert "<script" not in html.lower() and "<img" not in html.lower() and not EXTERNAL.search(html)
    assert html.count("&lt;img src=") == 3  # prompt, completion, config (JSON-quoted there)
    assert "&lt;b&gt; 1" in html


def test_single_step_run_renders(tmp_path):
    row = {"step": 1, "reward/total": 0.4, "reward/accuracy": 0.3, "kl": 0.0, "length/mean": 50, "length/min": 20,
           "length/max": 80, "length/clipped_ratio": 0.0, "time/generate": 1.0, "time/train": 0.5, "time/step": 1.7,
           "adv/mean": 0.0, "adv/std": 1.0, "adv/min": -1.5, "adv/max": 1.5, "grad_norm": 0.3, "lr": 1e-6}  # fmt: skip
    html = render_report(_run(tmp_path, [row]))
    for title in (
        "Reward by part",
        "KL to the reference",
        "Response length",
        "Time per step",
        "Advantage distribution",
    ):
        assert f"<h3>{title}</h3>" in html
    assert "step 1 → 1" in html


def test_missing_optional_metrics_and_messy_values(tmp_path):
    rows = [
        {"step": 1, "reward/total": 0.1, "kl": None, "entropy": "high", "phase": "grpo"},
        {"step": 2, "reward/total": float("nan"), "grad_norm": float("inf"), "my/custom": 3},
        {"step": 3, "reward/total": 0.3, "accuracy": True},
    ]
    html = render_report(_run(tmp_path, rows))
    assert "<h3>Reward by part</h3>" in html and "<h3>Training accuracy</h3>" in html
    for absent in ("KL to the reference", "Entropy", "Gradient norm", "Time per step", "Held-out evaluation"):
        assert f"<h3>{absent}</h3>" not in html
    assert "<h3>Other metrics</h3>" in html  # my/custom is shown, not dropped
    assert "<section id='samples'>" not in html and "<section id='config'>" not in html


def test_truncated_metrics_file_still_renders_with_a_note(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "reward/total": 0.5}\n{"step": 2, "rew')
    html = render_report(tmp_path)
    assert "<h3>Reward by part</h3>" in html
    assert "metrics.jsonl: last line (truncated write?) is not valid JSON and was skipped." in html


def test_empty_run_dir_says_there_are_no_metrics(tmp_path):
    html = render_report(tmp_path)
    assert "No metrics:" in html and "is missing or empty" in html
    assert "<svg" not in html
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "phase": "sft"}\n')
    assert "has no numeric metrics" in render_report(tmp_path)


def test_summary_only_run(tmp_path):
    summary = {"before": {"pass@1": 0.2, "pass@k": 0.5}, "after": {"pass@1": 0.45, "pass@k": 0.5}, "seed": 3}
    html = render_report(_run(tmp_path, summary=summary))
    assert "+25.0 pts" in html and "<td>+0.0 pts</td>" in html and "seed 3" in html


def test_write_report_default_path_and_atomic_replace(tmp_path):
    run = _run(tmp_path, [{"step": 1, "reward/total": 0.5}])
    out = write_report(run)
    assert out == run / "report.html" and out.read_text().startswith("<!DOCTYPE html>")
    assert oct(out.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "report.html"]  # no temp file left


def test_write_report_failure_keeps_the_old_report_and_leaves_no_temp(tmp_path, monkeypatch):
    run = _run(tmp_path, [{"step": 1, "reward/total": 0.5}])
    (run / "report.html").write_text("old report")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(report_html.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_report(run)
    assert (run / "report.html").read_text() == "old report"
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl", "report.html"]


def test_write_report_custom_path(tmp_path):
    out = write_report(_run(tmp_path, [{"step": 1, "kl": 0.1}]), tmp_path / "sub" / "r.html")
    assert out.is_file() and os.path.getsize(out) > 1000


def test_write_report_on_missing_dir_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        write_report(tmp_path / "does-not-exist")


def test_report_package_is_torch_free():
    code = "import sys, rlvr.report; bad = {'torch', 'transformers'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_long_run_is_thinned_and_fast_enough(tmp_path):
    rows = [
        {"step": s, "reward/total": (s % 7) / 7, "time/generate": 1.0, "time/train": 0.5}
        for s in range(1, 3001)
    ]
    html = render_report(_run(tmp_path, rows))
    assert "<h3>Time per step</h3>" in html  # > 40 steps: stacked area instead of bars
    assert len(html) < 3_000_000


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium package")
def test_fixture_screenshot_not_blank(tmp_path):
    page = write_report(FIXTURE, tmp_path / "report.html")
    png = tmp_path / "shot.png"
    cmd = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1200,3000",
        page.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60, capture_output=True)
    assert png.is_file() and png.stat().st_size > 50_000  # a blank 1200x3000 page compresses to a few KB
    pil = pytest.importorskip("PIL.Image")
    from PIL import ImageStat

    image = pil.open(png).convert("L")
    assert image.size == (1200, 3000)
    assert ImageStat.Stat(image).stddev[0] > 15  # text, plots and cards, not one flat colour
    dark = sum(image.histogram()[:100]) / (1200 * 3000)
    assert dark > 0.005  # headings and plot lines are drawn


@pytest.mark.parametrize(
    "rows",
    [
        [{"step": 1, "time/step": 0.0}, {"step": 2, "time/step": 0.0}],  # nothing to stack
        [{"step": 1, "time/train": 1.0, "time/step": 0.5}],  # phases exceed the step total
        [{"step": 1, "length/min": 3}, {"step": 2, "length/max": 9}],  # band halves never overlap
        [{"step": 1, "adv/min": -1.0}, {"step": 2, "adv/std": 1.0}],
        [{"step": 1, "grad_norm": 0.0}, {"step": 2, "grad_norm": 1e5, "skipped": 1}],
        [{"step": 10, "eval/pass@1": 0.5}],
        [{"step": -1, "kl": 1e300}, {"step": 1.5, "kl": -1e300}],
    ],
)
def test_partial_metric_families_render_without_warnings(tmp_path, rows, recwarn):
    html = render_report(_run(tmp_path, rows))
    assert html.count("<svg") == 1
    assert not [w for w in recwarn if "legend" in str(w.message)]
