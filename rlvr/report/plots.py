"""Training-curve plots for the run report, rendered with matplotlib (no pyplot, no display) as inline SVG.

`PANELS` is the closed table of plots; a panel is drawn only when at least one of its metrics was
logged, and every draw handles a single step (markers, not only lines), sparse and missing metrics.
Noisy per-step metrics are drawn as raw points plus a debiased exponential moving average (the
TensorBoard smoother), so trends are readable without hiding the scatter.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from itertools import pairwise

import matplotlib
from matplotlib.figure import Figure

from rlvr.report.load import Series

Metrics = dict[str, Series]
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
MAX_POINTS = 800  # raw points drawn per series; more are thinned by stride (smoothing uses all)
MAX_OTHER = 18  # metrics shown in the "other metrics" panel
TIME_PARTS = ("time/generate", "time/score", "time/reference", "time/train")


@dataclass(frozen=True)
class Plot:
    """One rendered panel: anchor id, heading, caption and the SVG markup (no XML prolog)."""

    id: str
    title: str
    caption: str
    svg: str


def smooth(values: list[float]) -> list[float]:
    """Debiased EMA with span ~ n/10 (clamped to [1, 50]): y_t = EMA_t / (1 - w^t)."""
    span = min(50.0, max(1.0, len(values) / 10))
    weight = 1 - 2 / (span + 1)
    out, acc = [], 0.0
    for t, value in enumerate(values, start=1):
        acc = weight * acc + (1 - weight) * value
        out.append(acc / (1 - weight**t) if weight > 0 else value)
    return out


def _thin(steps: list[float], values: list[float]) -> Series:
    stride = max(1, math.ceil(len(steps) / MAX_POINTS))
    return steps[::stride], values[::stride]


def trace(ax, series: Series, label: str, color: str, noisy: bool = True) -> None:
    """Raw points + smoothed line for a noisy metric with >= 8 points; otherwise the raw line."""
    steps, values = series
    if noisy and len(values) >= 8:
        xs, ys = _thin(steps, values)
        ax.scatter(xs, ys, s=7, color=color, alpha=0.3, linewidths=0)
        xs, ys = _thin(steps, smooth(values))
        ax.plot(xs, ys, color=color, lw=1.8, label=label)
    else:
        xs, ys = _thin(steps, values)
        marker = "o" if len(xs) <= 60 else None  # markers so a single step shows; a line when dense
        ax.plot(xs, ys, color=color, lw=1.4, marker=marker, ms=4, label=label)


def band(ax, low: Series, high: Series, color: str, alpha: float, label: str | None = None) -> None:
    """Shade between two series on their common steps (a vertical bar when there is only one)."""
    high_at = dict(zip(*high))
    pairs = [(s, lo, high_at[s]) for s, lo in zip(*low) if s in high_at]
    if not pairs:
        return
    xs, lows, highs = (list(col) for col in zip(*pairs))
    if len(xs) == 1:
        ax.vlines(xs, lows, highs, color=color, alpha=max(alpha, 0.5), lw=6, label=label)
    else:
        ax.fill_between(xs, lows, highs, color=color, alpha=alpha, lw=0, label=label)


def _style(ax, ylabel: str = "", legend: bool = True, min_legend: int = 2) -> None:
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.25)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    if legend and len(ax.get_legend_handles_labels()[0]) >= min_legend:
        ax.legend(fontsize=8, framealpha=0.85, edgecolor="none")


def _traces(
    fig: Figure, m: Metrics, keys: list[str], ylabel: str = "", noisy: bool = True, min_legend: int = 2
):
    ax = fig.add_subplot()
    for i, key in enumerate(keys):
        trace(ax, m[key], key, COLORS[i % len(COLORS)], noisy=noisy)
    _style(ax, ylabel, min_legend=min_legend)
    return ax


def _fraction(ax) -> None:
    ax.set_ylim(-0.03, 1.03)


def _draw_accuracy(fig: Figure, m: Metrics, keys: list[str]) -> None:
    _fraction(_traces(fig, m, keys, "fraction correct"))


def _draw_eval(fig: Figure, m: Metrics, keys: list[str]) -> None:
    _traces(fig, m, keys, "held-out", noisy=False, min_legend=1)


def _draw_grad_norm(fig: Figure, m: Metrics, keys: list[str]) -> None:
    ax = _traces(fig, m, keys, "‖g‖")
    values = m["grad_norm"][1]
    if min(values) > 0 and max(values) / min(values) > 100:
        ax.set_yscale("log")
    skipped = [s for s, v in zip(*m.get("skipped", ([], []))) if v > 0]
    for step in skipped:
        ax.axvline(step, color="#d62728", alpha=0.5, lw=1, ls="--")
    if skipped:
        ax.plot([], [], color="#d62728", ls="--", label="skipped update")
        _style(ax, "‖g‖")


def _draw_length(fig: Figure, m: Metrics, keys: list[str]) -> None:
    has_clip = "length/clipped_ratio" in m
    grid = fig.add_gridspec(2 if has_clip else 1, 1, height_ratios=[3, 1.3] if has_clip else [1])
    ax = fig.add_subplot(grid[0])
    if "length/min" in m and "length/max" in m:
        band(ax, m["length/min"], m["length/max"], COLORS[0], 0.15, "min–max")
    if "length/mean" in m:
        trace(ax, m["length/mean"], "mean", COLORS[0])
    _style(ax, "tokens")
    if has_clip:
        ax.set_xlabel("")
        low = fig.add_subplot(grid[1], sharex=ax)
        trace(low, m["length/clipped_ratio"], "clipped ratio", COLORS[1])
        _style(low, "truncated")


def _draw_mismatch(fig: Figure, m: Metrics, keys: list[str]) -> None:
    axes = fig.subplots(len(keys), 1, sharex=True, squeeze=False)[:, 0]
    for i, (ax, key) in enumerate(zip(axes, keys)):
        trace(ax, m[key], key, COLORS[i % len(COLORS)])
        _style(ax, key.split("/", 1)[1])
        if i < len(keys) - 1:
            ax.set_xlabel("")


def _time_table(m: Metrics) -> tuple[list[float], dict[str, list[float]]]:
    """Per-step seconds by phase on the union of steps; "other" = time/step minus the named phases."""
    steps = sorted({s for key in (*TIME_PARTS, "time/step") if key in m for s in m[key][0]})
    parts = {key.split("/")[1]: dict(zip(*m[key])) for key in TIME_PARTS if key in m}
    table = {name: [at.get(s, 0.0) for s in steps] for name, at in parts.items()}
    if "time/step" in m:
        total = dict(zip(*m["time/step"]))
        named = [sum(col) for col in zip(*table.values())] if table else [0.0] * len(steps)
        other = [max(0.0, total.get(s, 0.0) - n) if s in total else 0.0 for s, n in zip(steps, named)]
        if any(v > 1e-9 for v in other):
            table["other" if table else "step"] = other
    return steps, table


def _draw_time(fig: Figure, m: Metrics, keys: list[str]) -> None:
    ax = fig.add_subplot()
    steps, table = _time_table(m)
    colors = [COLORS[i % len(COLORS)] for i in range(len(table))]
    if len(steps) <= 40:
        gaps = [b - a for a, b in pairwise(steps)]
        width = 0.8 * min(gaps) if gaps else 0.8
        bottom = [0.0] * len(steps)
        for (name, col), color in zip(table.items(), colors):
            ax.bar(steps, col, width=width, bottom=bottom, color=color, label=name)
            bottom = [b + v for b, v in zip(bottom, col)]
    else:
        ax.stackplot(steps, *table.values(), labels=list(table), colors=colors, alpha=0.85)
    _style(ax, "seconds per step", legend=False)
    if table:
        fig.legend(fontsize=8, frameon=False, loc="outside upper center", ncols=min(5, len(table)))


def _draw_advantages(fig: Figure, m: Metrics, keys: list[str]) -> None:
    ax = fig.add_subplot()
    if "adv/min" in m and "adv/max" in m:
        band(ax, m["adv/min"], m["adv/max"], COLORS[4], 0.12, "min–max")
    if "adv/mean" in m and "adv/std" in m:
        mean, std = m["adv/mean"], dict(zip(*m["adv/std"]))
        pts = [(s, v, std[s]) for s, v in zip(*mean) if s in std]
        low = ([s for s, _, _ in pts], [v - d for _, v, d in pts])
        high = ([s for s, _, _ in pts], [v + d for _, v, d in pts])
        band(ax, low, high, COLORS[4], 0.3, "mean ± std")
    if "adv/mean" in m:
        trace(ax, m["adv/mean"], "mean", COLORS[4])
    _style(ax, "advantage")


def _draw_other(fig: Figure, m: Metrics, keys: list[str]) -> None:
    ncols = min(3, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, (ax, key) in enumerate(zip(axes, keys)):
        trace(ax, m[key], key, COLORS[i % len(COLORS)])
        _style(ax, "")
        ax.set_title(key, fontsize=9)
    for ax in axes[len(keys) :]:
        ax.set_visible(False)


def _simple(
    ylabel: str, fraction: bool = False, noisy: bool = True
) -> Callable[[Figure, Metrics, list[str]], None]:
    def draw(fig: Figure, m: Metrics, keys: list[str]) -> None:
        ax = _traces(fig, m, keys, ylabel, noisy=noisy)
        if fraction:
            _fraction(ax)

    return draw


def _rewards(m: Metrics) -> list[str]:
    return [k for k in m if k == "reward/total"] + sorted(
        k for k in m if k.startswith("reward/") and k != "reward/total"
    )


def _present(*keys: str) -> Callable[[Metrics], list[str]]:
    return lambda m: [k for k in keys if k in m]


def _prefix(prefix: str) -> Callable[[Metrics], list[str]]:
    return lambda m: sorted(k for k in m if k.startswith(prefix))


# (id, title, caption, which metrics it shows, draw, figure height in inches)
PANELS: tuple[tuple[str, str, str, Callable[[Metrics], list[str]], Callable, float], ...] = (
    ("rewards", "Reward by part", "Mean reward per step: the total and each named part (accuracy, format, ...).", _rewards, _simple("reward"), 3.4),
    ("accuracy", "Training accuracy", "Fraction of sampled completions judged correct by the verifier.", _present("accuracy"), _draw_accuracy, 3.2),
    ("eval", "Held-out evaluation", "Periodic evaluation logged by the trainer (eval/<metric>).", _prefix("eval/"), _draw_eval, 3.2),
    ("kl", "KL to the reference", "Estimated KL(policy ‖ reference) per token.", _present("kl"), _simple("KL"), 3.0),
    ("entropy", "Entropy", "Mean per-token entropy of the policy on its own samples; a collapse means exploration stopped.", _present("entropy"), _simple("nats"), 3.0),
    ("length", "Response length", "Completion length (mean, min–max band) and the fraction cut off at the token limit.", _present("length/mean", "length/min", "length/max", "length/clipped_ratio"), _draw_length, 4.0),
    ("clip", "Clip fractions", "Fraction of tokens whose importance ratio hit the lower / upper PPO clip bound.", _present("clip/frac", "clip/low_frac", "clip/high_frac"), _simple("fraction of tokens"), 3.0),
    ("ratio", "Importance ratio", "π_θ / π_old over tokens (1.0 on the first epoch of fully on-policy data).", _present("ratio/mean", "ratio/max"), _simple("ratio"), 3.0),
    ("grad_norm", "Gradient norm", "Global gradient norm before clipping; dashed lines mark skipped (non-finite) updates.", _present("grad_norm"), _draw_grad_norm, 3.0),
    ("loss", "Loss", "The aggregated objective minimised at each step.", _present("loss"), _simple("loss"), 3.0),
    ("mismatch", "Sampler / trainer mismatch", "How far the sampler's logprobs are from the trainer's recomputation of the same tokens.", _present("mismatch/abs_logp_diff", "mismatch/max_ratio", "mismatch/masked_frac"), _draw_mismatch, 4.2),
    ("throughput", "Throughput", "Tokens processed per second of wall-clock time.", _present("tokens_per_s"), _simple("tokens / s"), 3.0),
    ("time", "Time per step", "Where each step's wall-clock time goes: generation, scoring, reference forward, training.", _present(*TIME_PARTS, "time/step"), _draw_time, 3.4),
    ("lr", "Learning rate", "Optimizer learning rate after the schedule.", _present("lr"), _simple("lr", noisy=False), 2.8),
    ("zero_var", "Zero-variance groups", "Fraction of groups whose completions all got the same reward (no learning signal).", _present("groups/zero_var_frac"), _simple("fraction of groups", fraction=True), 3.0),
    ("advantages", "Advantage distribution", "Advantages per step: mean, mean ± std and min–max.", _present("adv/mean", "adv/std", "adv/min", "adv/max"), _draw_advantages, 3.2),
    ("kl_control", "KL coefficient", "beta (adaptive KL moves it toward the target) and the KL per sequence it reads.", _present("kl/beta", "kl/per_sequence", "kl/reward_penalty"), _simple("nats / beta"), 3.0),
    ("value", "Critic (PPO)", "Value loss, explained variance (1 - Var[R - V] / Var[R]; 1 is a perfect critic) and the value clip fraction.", _present("value/loss", "value/explained_variance", "value/clip_frac"), _simple("value"), 3.2),
    ("value_dist", "Values, returns and raw advantages (PPO)", "Per-token means over valid tokens, before advantage whitening.", _present("values/mean", "returns/mean", "adv_raw/mean", "adv_raw/std"), _simple("per token"), 3.2),
    ("distill", "Distillation", "Per-token KL to the teacher (distill/kl over its top-k; distill/kl_sampled: log S - log T at the student's samples) and how often the student's top-1 token is the teacher's.", _prefix("distill/"), _simple("nats / fraction"), 3.2),
    ("preference", "Implicit rewards (DPO / reward model)", "Mean reward of chosen and rejected completions, their margin, and preference accuracy.", _present("rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy"), _simple("reward"), 3.2),
)  # fmt: skip


def other_keys(m: Metrics, shown: Iterable[str]) -> list[str]:
    """Logged metrics no panel shows (first MAX_OTHER by name), so nothing logged is invisible."""
    hidden = {"step", "skipped", *shown}
    return sorted(k for k in m if k not in hidden)[:MAX_OTHER]


def to_svg(fig: Figure, salt: str) -> str:
    """The figure as inline-SVG markup; `salt` keeps element ids unique across figures on one page."""
    buf = io.StringIO()
    meta = {"Date": None, "Creator": None, "Format": None, "Type": None}
    with matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "path"}):
        fig.savefig(buf, format="svg", metadata=meta)
    svg = buf.getvalue()
    svg = svg[svg.index("<svg") :]
    # HTML5 parsers put <svg> in the SVG namespace and map xlink:href themselves: drop the URLs.
    return re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", svg, count=2)


def render_plots(m: Metrics) -> list[Plot]:
    """Every panel whose metrics exist, in table order, then the leftover metrics."""
    plots, shown = [], set()
    for pid, title, caption, select, draw, height in PANELS:
        keys = select(m)
        shown.update(keys)
        if keys:
            plots.append(Plot(pid, title, caption, _figure(draw, m, keys, height, pid)))
    extra = other_keys(m, shown | {"time/step"})
    if extra:
        height = 2.4 * math.ceil(len(extra) / 3)
        caption = "Metrics in metrics.jsonl that no panel above shows."
        plots.append(Plot("other", "Other metrics", caption, _figure(_draw_other, m, extra, height, "other")))
    return plots


def _figure(draw: Callable, m: Metrics, keys: list[str], height: float, salt: str) -> str:
    fig = Figure(figsize=(6.4, height), layout="constrained")
    draw(fig, m, keys)
    return to_svg(fig, f"rlvr-{salt}")
