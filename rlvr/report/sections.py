"""HTML fragments of the run report: evaluation tables, sample completions, config, overview cards.

Every string that comes from the run (completions, prompts, config values, file names) goes through
`esc`, so model output such as "<script>" is shown, never executed.
"""

from __future__ import annotations

import json
import math
from html import escape
from typing import Any

from rlvr.report.load import RunData, as_float

SUMMARY_ORDER = ("pass@1", "pass@k", "maj@k", "format_rate", "mean_length")
MAX_COMPLETION_CHARS = 6000
MAX_PROMPT_CHARS = 4000


def esc(value: Any) -> str:
    return escape(str(value), quote=True)


def fmt(value: float | None) -> str:
    """Compact number: integers as such, else 4 significant digits; None as an em dash."""
    if value is None or not math.isfinite(value):
        return "—"
    if value == int(value) and abs(value) < 1e9:
        return f"{int(value):,}"
    return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.4g}"


def fmt_seconds(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else (f"{minutes}m {secs:02d}s" if minutes else f"{secs}s")


def _is_rate(name: str, values: list[float | None]) -> bool:
    """Rates (pass@k, format_rate, ...) are shown in percent, their deltas in points."""
    known = [v for v in values if v is not None]
    return "length" not in name and bool(known) and all(0.0 <= v <= 1.0 for v in known)


def _delta_cell(name: str, before: float | None, after: float | None, rate: bool) -> str:
    if before is None or after is None:
        return "<td>—</td>"
    delta = after - before
    text = f"{delta * 100:+.1f} pts" if rate else f"{delta:+.4g}"
    tone = "" if not rate or abs(delta) < 1e-12 else (" class='up'" if delta > 0 else " class='down'")
    return f"<td{tone}>{text}</td>"


def summary_table(summary: dict[str, Any]) -> str:
    """Before/after table from summary.json, with the change of each metric."""
    before = summary.get("before") if isinstance(summary.get("before"), dict) else {}
    after = summary.get("after") if isinstance(summary.get("after"), dict) else {}
    names = [n for n in SUMMARY_ORDER if n in before or n in after]
    names += sorted(n for n in {*before, *after} - set(names) if as_float((before | after)[n]) is not None)
    rows = []
    for name in names:
        b, a = as_float(before.get(name)), as_float(after.get(name))
        rate = _is_rate(name, [b, a])
        show = (lambda v: "—" if v is None else f"{v * 100:.1f}%") if rate else fmt
        rows.append(
            f"<tr><th>{esc(name)}</th><td>{show(b)}</td><td>{show(a)}</td>{_delta_cell(name, b, a, rate)}</tr>"
        )
    extras = []
    if as_float(summary.get("wall_seconds")) is not None:
        extras.append(f"wall time {fmt_seconds(as_float(summary['wall_seconds']))}")
    if summary.get("seed") is not None:
        extras.append(f"seed {esc(summary['seed'])}")
    table = (
        "<table class='num'><thead><tr><th>metric</th><th>before</th><th>after</th><th>change</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else "<p class='muted'>summary.json has no before/after metrics.</p>"
    )
    return table + (f"<p class='muted'>{' · '.join(extras)}</p>" if extras else "")


def arms_table(arms: dict[str, Any]) -> str:
    """The distill recipe's arms (summary.json "arms"): held-out pass@1 mean ± standard error over seeds."""
    rows = []
    for arm, a in arms.items():
        cells = []
        for key in ("pass@1", "greedy_pass@1"):
            m = a.get(key) if isinstance(a.get(key), dict) else {}
            mean, se = as_float(m.get("mean")), as_float(m.get("se"))
            cells.append("—" if mean is None else f"{mean * 100:.1f}%" + ("" if se is None else f" ± {se * 100:.1f}"))
        seeds = a.get("per_seed") if isinstance(a.get("per_seed"), dict) else {}
        per = " ".join(f"{esc(s)}: {v * 100:.1f}%" for s, v in seeds.items() if as_float(v) is not None)
        tokens = as_float(a.get("trained_tokens"))
        rows.append(f"<tr><th>{esc(arm)}</th><td>{cells[0]}</td><td>{cells[1]}</td>"
                    f"<td>{'—' if tokens is None else f'{tokens:,.0f}'}</td><td>{per}</td></tr>")  # fmt: skip
    return ("<table class='num'><thead><tr><th>arm</th><th>pass@1 (mean ± se)</th><th>greedy pass@1</th>"
            f"<th>trained tokens</th><th>per seed</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")  # fmt: skip


def _metric_cell(raw: Any) -> str:
    if isinstance(raw, dict):
        value, stderr = as_float(raw.get("value")), as_float(raw.get("stderr"))
        low, high = as_float(raw.get("ci_low")), as_float(raw.get("ci_high"))
        cell = fmt(value)
        if stderr is not None:
            cell += f" <span class='muted'>± {fmt(stderr)}</span>"
        if low is not None and high is not None:
            cell += f"<br><span class='ci'>95% CI [{fmt(low)}, {fmt(high)}]</span>"
        return f"<td>{cell}</td>"
    return f"<td>{fmt(as_float(raw))}</td>"


def evals_table(evals: dict[str, dict[str, Any]]) -> str:
    """One column per eval/*.json file, one row per metric (value ± stderr, 95% CI)."""
    names: list[str] = []
    for data in evals.values():
        names += [n for n in data["metrics"] if n not in names]
    head = "".join(f"<th>{esc(stem)}</th>" for stem in evals)
    rows = [
        f"<tr><th>{esc(n)}</th>{''.join(_metric_cell(d['metrics'].get(n)) for d in evals.values())}</tr>"
        for n in names
    ]
    notes = [f"<li><b>{esc(s)}</b>: {esc(n)}</li>" for s, d in evals.items() for n in d.get("notes") or []]
    out = f"<table class='num'><thead><tr><th>metric</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    return out + (f"<ul class='muted'>{''.join(notes)}</ul>" if notes else "")


def pick_samples(rows: list[dict[str, Any]], k: int = 3) -> tuple[list[dict], list[dict], list[float]]:
    """Top-k and bottom-k rows by reward from the latest steps (newest first until there are 2k rows).

    Rows without a finite reward are not ranked; ties keep file order.
    """
    by_step: dict[float, list[dict]] = {}
    for index, row in enumerate(rows, start=1):
        if as_float(row.get("reward")) is not None:
            step = as_float(row.get("step"))
            by_step.setdefault(float(index) if step is None else step, []).append(row)
    pool, steps = [], []
    for step in sorted(by_step, reverse=True):
        if len(pool) >= 2 * k:
            break
        pool += by_step[step]
        steps.append(step)
    ranked = sorted(pool, key=lambda r: -as_float(r["reward"]))
    best = ranked[:k]
    worst = ranked[k:][-k:][::-1]
    return best, worst, sorted(steps)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        return "\n\n".join(f"[{m.get('role', '?')}]\n{m.get('content', '')}" for m in value)
    return json.dumps(value, indent=1, ensure_ascii=False, default=str)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return esc(text)
    return esc(text[:limit]) + f"<span class='muted'>\n… ({len(text) - limit:,} more characters)</span>"


def sample_card(row: dict[str, Any]) -> str:
    parts = row.get("parts") if isinstance(row.get("parts"), dict) else {}
    badges = [f"<span class='badge total'>reward {fmt(as_float(row.get('reward')))}</span>"]
    badges += [f"<span class='badge'>{esc(name)} {fmt(as_float(v))}</span>" for name, v in parts.items()]
    meta = [
        f"{label} {esc(row[key])}"
        for key, label in (("step", "step"), ("example_id", "example"), ("finish_reason", "finish"))
        if row.get(key) is not None
    ]
    prompt = row.get("prompt")
    prompt_html = (
        f"<details><summary>prompt</summary><pre>{_clip(_text(prompt), MAX_PROMPT_CHARS)}</pre></details>"
        if prompt is not None
        else ""
    )
    completion = _clip(_text(row.get("completion", "")), MAX_COMPLETION_CHARS)
    return (
        f"<div class='sample'><div class='badges'>{''.join(badges)}"
        f"<span class='muted'>{' · '.join(meta)}</span></div>{prompt_html}"
        f"<pre class='completion'>{completion}</pre></div>"
    )


def samples_section(rows: list[dict[str, Any]]) -> str:
    best, worst, steps = pick_samples(rows)
    if not best:
        return "<p class='muted'>samples.jsonl has no rows with a numeric reward.</p>"
    span = fmt(steps[0]) if len(steps) == 1 else f"{fmt(steps[0])}–{fmt(steps[-1])}"
    out = f"<p class='muted'>Ranked by total reward among {len(rows):,} logged samples, taken from step {span}.</p>"
    out += "<h3>Best</h3>" + "".join(sample_card(r) for r in best)
    if worst:
        out += "<h3>Worst</h3>" + "".join(sample_card(r) for r in worst)
    return out


def config_section(config: Any) -> str:
    text = json.dumps(config, indent=2, ensure_ascii=False, default=str)
    return f"<details><summary>config.json (resolved)</summary><pre>{esc(text)}</pre></details>"


def _edge_means(values: list[float]) -> tuple[float, float]:
    n = max(1, len(values) // 10)
    return sum(values[:n]) / n, sum(values[-n:]) / n


def overview_cards(run: RunData) -> str:
    """Headline numbers: steps, start → end of reward and accuracy, wall time, skipped updates, seed."""
    cards: list[tuple[str, str, str]] = []
    steps = sorted({s for series in run.metrics.values() for s in series[0]})
    if steps:
        cards.append(("steps logged", f"{len(steps):,}", f"step {fmt(steps[0])} → {fmt(steps[-1])}"))
    for key in ("reward/total", "accuracy"):
        if key in run.metrics:
            first, last = _edge_means(run.metrics[key][1])
            cards.append((key, f"{fmt(first)} → {fmt(last)}", "mean of first → last 10% of steps"))
    summary = run.summary or {}
    before, after = summary.get("before"), summary.get("after")
    if isinstance(before, dict) and isinstance(after, dict):
        b, a = as_float(before.get("pass@1")), as_float(after.get("pass@1"))
        if b is not None and a is not None:
            cards.append(
                ("held-out pass@1", f"{b * 100:.1f}% → {a * 100:.1f}%", f"{(a - b) * 100:+.1f} points")
            )
    wall = as_float(summary.get("wall_seconds"))
    if wall is None and "time/step" in run.metrics:
        wall = sum(run.metrics["time/step"][1])
    if wall is not None:
        cards.append(
            (
                "wall time",
                fmt_seconds(wall),
                "summary.json" if "wall_seconds" in summary else "sum of time/step",
            )
        )
    if run.skipped_steps:
        cards.append(("skipped updates", str(len(run.skipped_steps)), "non-finite loss or gradient"))
    html = "".join(
        f"<div class='card'><div class='label'>{esc(a)}</div><div class='value'>{esc(b)}</div>"
        f"<div class='muted'>{esc(c)}</div></div>"
        for a, b, c in cards
    )
    return f"<div class='cards'>{html}</div>" if cards else ""
