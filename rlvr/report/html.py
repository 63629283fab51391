"""The run report page: one self-contained HTML file (inline CSS and SVG, no scripts, no URLs).

`render_report(run_dir)` builds the page from whatever the run left behind; `write_report` writes it
atomically (temp file in the target folder, then os.replace), so a reader never sees half a report.
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from rlvr.errors import check_output_file
from rlvr.report import sections
from rlvr.report.load import RunData, load_run
from rlvr.report.plots import render_plots
from rlvr.report.sections import esc

CSS = """
:root { --fg:#1d2330; --muted:#687087; --line:#e3e6ee; --bg:#f6f7fb; --accent:#1f5fbf; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg);
  font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; }
main { max-width:1240px; margin:0 auto; padding:28px 28px 60px; }
header h1 { margin:0 0 4px; font-size:26px; }
h2 { margin:36px 0 12px; font-size:20px; border-bottom:2px solid var(--line); padding-bottom:4px; }
h3 { margin:20px 0 8px; font-size:16px; }
.muted, .ci { color:var(--muted); font-size:13px; }
nav.toc { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 16px; margin:18px 0; }
nav.toc a { color:var(--accent); text-decoration:none; margin-right:16px; white-space:nowrap; }
nav.toc a:hover { text-decoration:underline; }
.cards { display:flex; flex-wrap:wrap; gap:12px; margin:8px 0; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:170px; }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.04em; }
.card .value { font-size:21px; font-weight:600; }
table { border-collapse:collapse; background:#fff; border:1px solid var(--line); border-radius:8px; margin:6px 0; }
th, td { padding:6px 14px; border-bottom:1px solid var(--line); text-align:left; vertical-align:top; }
thead th { background:#eef1f7; font-size:13px; }
table.num td { text-align:right; font-variant-numeric:tabular-nums; }
td.up { color:#1a7f37; font-weight:600; } td.down { color:#c0262d; font-weight:600; }
.plots { display:grid; grid-template-columns:repeat(auto-fill,minmax(540px,1fr)); gap:16px; }
.plot { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.plot h3 { margin:0; } .plot p { margin:2px 0 6px; }
.plot svg { width:100%; height:auto; display:block; }
.plot.wide { grid-column:1 / -1; }
.sample { background:#fff; border:1px solid var(--line); border-radius:8px; padding:10px 14px; margin:10px 0; }
.badges { display:flex; flex-wrap:wrap; gap:6px; align-items:center; margin-bottom:6px; }
.badge { background:#eef1f7; border-radius:10px; padding:1px 9px; font-size:13px; }
.badge.total { background:#dbe7fb; font-weight:600; }
pre { font:13px/1.45 ui-monospace,"SFMono-Regular",Menlo,Consolas,"DejaVu Sans Mono",monospace;
  white-space:pre-wrap; word-break:break-word; background:#f3f4f8; border-radius:6px; padding:8px 10px; margin:6px 0; }
pre.completion { background:#fbfbf4; border:1px solid #ecebd8; }
details > summary { cursor:pointer; color:var(--accent); }
.notes { background:#fff8e6; border:1px solid #f0dca0; border-radius:8px; padding:8px 16px; }
.empty { background:#fff; border:1px dashed var(--line); border-radius:8px; padding:18px; color:var(--muted); }
"""


def _section(sid: str, title: str, body: str) -> tuple[str, str, str]:
    return sid, title, f"<section id='{sid}'><h2>{esc(title)}</h2>{body}</section>"


def _evaluation(run: RunData) -> str:
    parts = []
    if run.summary is not None and isinstance(run.summary.get("arms"), dict):  # `rlvr demo --recipe distill`
        parts.append("<h3>Arms, held-out (summary.json)</h3>" + sections.arms_table(run.summary["arms"]))
    elif run.summary is not None:
        parts.append("<h3>Before / after (summary.json)</h3>" + sections.summary_table(run.summary))
    if run.evals:
        parts.append("<h3>Evaluation files (eval/*.json)</h3>" + sections.evals_table(run.evals))
    return "".join(parts)


def _curves(run: RunData) -> str:
    plots = render_plots(run.metrics)
    if not plots:
        where = esc(run.run_dir / "metrics.jsonl")
        what = "has no numeric metrics" if run.n_metric_rows else "is missing or empty"
        return f"<p class='empty'>No metrics: {where} {what}, so there are no training curves to plot.</p>"
    cards = []
    for plot in plots:
        wide = " wide" if plot.id == "other" else ""
        cards.append(
            f"<div class='plot{wide}' id='plot-{plot.id}'><h3>{esc(plot.title)}</h3>"
            f"<p class='muted'>{esc(plot.caption)}</p>{plot.svg}</div>"
        )
    index = " · ".join(f"<a href='#plot-{p.id}'>{esc(p.title)}</a>" for p in plots)
    return f"<p class='muted'>{index}</p><div class='plots'>{''.join(cards)}</div>"


def _sections(run: RunData) -> list[tuple[str, str, str]]:
    out = []
    overview = sections.overview_cards(run)
    if overview:
        out.append(_section("overview", "Overview", overview))
    evaluation = _evaluation(run)
    if evaluation:
        out.append(_section("evaluation", "Evaluation", evaluation))
    out.append(_section("curves", "Training curves", _curves(run)))
    if run.samples:
        out.append(_section("samples", "Sample completions", sections.samples_section(run.samples)))
    if run.config is not None:
        out.append(_section("config", "Configuration", sections.config_section(run.config)))
    if run.notes:
        items = "".join(f"<li>{esc(note)}</li>" for note in run.notes)
        out.append(_section("notes", "Notes on the inputs", f"<ul class='notes'>{items}</ul>"))
    return out


def render_report(run_dir: str | Path, *, generated_at: datetime | None = None) -> str:
    """The report for `run_dir` as one self-contained HTML document (every input file optional)."""
    run = load_run(run_dir)
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    stamp = f"generated {when}"
    if run.metrics_mtime is not None:
        stamp += f" · metrics last written {run.metrics_mtime.strftime('%Y-%m-%d %H:%M UTC')}"
    parts = _sections(run)
    toc = "".join(f"<a href='#{sid}'>{esc(title)}</a>" for sid, title, _ in parts)
    body = "".join(html for _, _, html in parts)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>rlvr report · {esc(run.name)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>rlvr run report · {esc(run.name)}</h1>"
        f"<div class='muted'>{esc(stamp)}<br>{esc(run.run_dir.resolve())}</div></header>"
        f"<nav class='toc'>{toc}</nav>{body}</main></body></html>\n"
    )


def write_report(run_dir: str | Path, out_path: str | Path | None = None) -> Path:
    """Render the report and write it atomically; returns the path (default run_dir/report.html)."""
    html = render_report(run_dir)
    out = check_output_file(Path(run_dir) / "report.html" if out_path is None else out_path, "report file")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(html)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out
