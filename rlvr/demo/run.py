"""`run_demo`: the R1 recipe end to end on a tiny model, on a laptop CPU, in minutes.

    build task + tiny model -> SFT cold start on noisy R1-format traces -> held-out eval (before)
    -> GRPO with accuracy + format rewards -> held-out eval (after) -> summary.json + report.html

Run directory (the shared layout, so `rlvr report` and `rlvr eval` read it like any other run):

    DIR/config.json, metrics.jsonl, samples.jsonl, checkpoints/   the GRPO run
    DIR/sft/config.json, metrics.jsonl, checkpoints/              the SFT cold start
    DIR/eval/before.json, DIR/eval/after.json                     held-out evaluations
    DIR/summary.json, DIR/report.html
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from rlvr.demo.plan import PLANS, DemoPlan, rl_config, sft_config, task_kwargs
from rlvr.errors import RunDirError, Stopped
from rlvr.evaluation import EvalResult, evaluate
from rlvr.evaluation.runner import weights_fingerprint
from rlvr.models.load import quiet_transformers
from rlvr.models.tiny import build_model, build_tokenizer
from rlvr.provenance import provenance
from rlvr.report import write_report
from rlvr.rollout.base import SamplingParams
from rlvr.rollout.hf import HFEngine
from rlvr.tasks import make_task
from rlvr.trainer import CallbackContext, train_rl, train_sft

# The keys summary.json promises in "before" and "after" (issue 6), then the extras we add.
SUMMARY_KEYS = ("pass@1", "pass@k", "maj@k", "format_rate", "mean_length")
STAGES = 5


class _Progress:
    """Stage lines with elapsed time and time left: the plan's nominal stage costs (seconds on an idle
    2-core CPU) scaled by how much slower than nominal the finished stages ran."""

    def __init__(self, enabled: bool, nominal: dict[str, float]) -> None:
        self.enabled, self.nominal, self.t0 = enabled, nominal, time.perf_counter()
        self.stage_seconds: dict[str, float] = {}

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def say(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def stage(self, index: int, name: str, message: str) -> None:
        self.say(f"[{index}/{STAGES}] {message}   (elapsed {_clock(self.elapsed)})")
        self._name, self._start = name, time.perf_counter()

    @property
    def current(self) -> str:
        return getattr(self, "_name", "start")

    def done(self) -> None:
        seconds = time.perf_counter() - self._start
        self.stage_seconds[self._name] = round(seconds, 1)
        self.say(f"      {self._name} took {_clock(seconds)}{self._eta()}")

    def _eta(self) -> str:
        done = sum(self.nominal.get(name, 0.0) for name in self.stage_seconds)
        left = sum(v for name, v in self.nominal.items() if name not in self.stage_seconds)
        if left <= 0 or done <= 0:
            return ""
        return f"; about {_clock(left * self.elapsed / done)} left"


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise RunDirError(
            f"{out_dir} already exists and is not empty: pass --out with a new directory, or delete it"
        )


def held_out_eval(
    model: Any, tokenizer: Any, task: Any, plan: DemoPlan, seed: int, path: Path
) -> dict[str, float]:
    """Sampled metrics (n = plan.eval_samples at plan.eval_temperature) plus greedy pass@1, saved to `path`."""
    engine = HFEngine(model, tokenizer, max_batch_size=plan.eval_batch, check_every=plan.check_every)
    stop = (tokenizer.eos_token_id,)
    examples = list(task.examples("test"))
    n = plan.eval_samples
    sampled = SamplingParams(
        temperature=plan.eval_temperature, max_new_tokens=plan.max_new_tokens, stop_token_ids=stop
    )
    result = evaluate(
        engine, tokenizer, task, examples, n=n, ks=[1, n], params=sampled, seed=seed, n_boot=200
    )
    greedy = SamplingParams(temperature=0.0, max_new_tokens=plan.max_new_tokens, stop_token_ids=stop)
    greedy_result = evaluate(
        engine, tokenizer, task, examples, n=1, ks=[1], params=greedy, seed=seed, n_boot=200
    )
    result.metrics["greedy_pass@1"] = greedy_result.metrics["pass@1"]
    result.config.update(task_kwargs=task_kwargs(plan, seed), model_fingerprint=weights_fingerprint(model),
                         greedy_params=greedy.as_dict())  # fmt: skip
    result.save(path)
    return flat_metrics(result, n)


def flat_metrics(result: EvalResult, n: int) -> dict[str, float]:
    """The summary's flat view: the promised keys (pass@k and maj@k at k = n) and every metric by name."""
    values = {name: float(mv.value) for name, mv in result.metrics.items()}
    out = {
        "pass@1": values["pass@1"],
        "pass@k": values[f"pass@{n}"],
        "maj@k": values.get(f"maj@{n}", values["pass@1"]),  # maj@1 is pass@1
        "format_rate": values.get("format_rate", math.nan),
        "mean_length": values["mean_length"],
    }
    return out | {k: v for k, v in values.items() if k not in out}


def rl_eval_callback(task: Any, plan: DemoPlan, seed: int) -> Any:
    """Held-out pass@1 on the first `plan.rl_eval_examples` test problems during GRPO (the report's curve)."""
    examples = list(task.examples("test"))[: plan.rl_eval_examples]
    n = max(1, plan.eval_samples // 2)

    def callback(ctx: CallbackContext) -> dict[str, float]:
        if ctx.final:  # the full evaluation after training covers the last step
            return {}
        params = SamplingParams(temperature=plan.eval_temperature, max_new_tokens=plan.max_new_tokens,
                                stop_token_ids=(ctx.tokenizer.eos_token_id,))  # fmt: skip
        result = evaluate(
            ctx.engine, ctx.tokenizer, task, examples, n=n, ks=[1], params=params, seed=seed, n_boot=20
        )
        return {"pass@1": result.metrics["pass@1"].value, "format_rate": result.metrics["format_rate"].value}

    return callback


def before_after_table(before: dict[str, float], after: dict[str, float], k: int) -> str:
    """The console table: one row per summary key, rates in percent, with the change."""
    rows = [("metric", "after SFT", "after GRPO", "change")]
    for key in (*SUMMARY_KEYS, "greedy_pass@1"):
        b, a = before.get(key, math.nan), after.get(key, math.nan)
        label = key.replace("@k", f"@{k}")
        if key == "mean_length":
            rows.append((f"{label} (tokens)", f"{b:.1f}", f"{a:.1f}", f"{a - b:+.1f}"))
        else:
            rows.append((label, f"{100 * b:.1f}%", f"{100 * a:.1f}%", f"{100 * (a - b):+.1f} pts"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    """Atomic JSON write (temp file in the same folder, then os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, allow_nan=False, default=str)
            fh.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _finite(d: dict[str, float]) -> dict[str, float | None]:
    return {k: (v if math.isfinite(v) else None) for k, v in d.items()}


@contextlib.contextmanager
def _quiet_threads(threads: int | None) -> Iterator[None]:
    """Run with `threads` torch threads (None: as is) and without transformers' per-save progress bars;
    restore both."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with quiet_transformers():
            yield
    finally:
        torch.set_num_threads(before)


def _provenance(plan: DemoPlan, seed: int, fingerprint: str) -> dict[str, Any]:
    """What produced summary.json: code, task and kwargs, the model, the held-out sampling parameters."""
    sampling = {"n": plan.eval_samples, "temperature": plan.eval_temperature, "max_new_tokens": plan.max_new_tokens,
                "greedy_pass@1": {"temperature": 0.0}}  # fmt: skip
    model = {"preset": plan.preset, "seed": seed, "fingerprint_after": fingerprint}
    return provenance(task=plan.task, task_kwargs=task_kwargs(plan, seed), model=model, sampling=sampling)


def _stopped(result: Any, stage: str, out_dir: Path) -> None:
    """A stage the driver stopped on a signal stops the whole demo (the later stages would be meaningless)."""
    if result is not None and getattr(result, "status", "completed") == "interrupted":
        raise Stopped(result.signal or "SIGINT", _stop_message(stage, out_dir, result.step))


def _stop_message(stage: str, out_dir: Path, step: int | None = None) -> str:
    at = f" (after step {step})" if step is not None else ""
    return (f"during the demo's {stage} stage{at}; partial results are in {out_dir}. The demo does not "
            f"resume: run it again with a new --out (or delete {out_dir})")  # fmt: skip


def run_demo(
    out_dir: Path, seed: int = 0, *, quick: bool = False, progress: bool = True, threads: int | None = None
) -> dict[str, Any]:
    """SFT cold start -> eval -> GRPO -> eval on a tiny model; writes summary.json and report.html in `out_dir`.

    Returns the summary (also written to `out_dir/summary.json`) and prints the before/after table.
    `quick` runs the same recipe with smaller budgets (for tests); `progress` shows stage lines and
    step bars on stderr; `threads` overrides the plan's torch thread count.  Refuses a non-empty
    `out_dir` rather than mixing two runs' files.
    """
    out_dir, plan = Path(out_dir), PLANS["quick" if quick else "full"]
    if threads is not None:
        plan = dataclasses.replace(plan, threads=threads)
    _check_out_dir(out_dir)
    clock = _Progress(progress, plan.nominal_seconds())
    clock.say(
        f"rlvr demo: seed {seed}, task {plan.task} {plan.task_kwargs}, tiny {plan.preset} model, "
        f"{'quick' if quick else 'full'} plan -> {out_dir}"
    )
    with _quiet_threads(plan.threads):
        try:
            before, after, fingerprint = _pipeline(out_dir, seed, plan, clock, progress)
        except Stopped as stop:  # a signal outside the training loops (build, evaluation)
            raise Stopped(stop.signal_name, stop.message or _stop_message(clock.current, out_dir)) from None
        summary = {
            "before": _finite(before),
            "after": _finite(after),
            "gain_points": {
                k: round(100 * (after[k] - before[k]), 2) for k in SUMMARY_KEYS if k != "mean_length"
            },
            "wall_seconds": round(clock.elapsed, 1),
            "seed": seed,
            "k": plan.eval_samples,
            "n_test": plan.n_test,
            "stage_seconds": clock.stage_seconds,
            "plan": "quick" if quick else "full",
            "settings": plan.as_dict(),
            "provenance": _provenance(plan, seed, fingerprint),
        }
        write_json(out_dir / "summary.json", summary)
        report = write_report(out_dir)
    print(before_after_table(before, after, plan.eval_samples))
    print(f"wall time {_clock(clock.elapsed)}; wrote {out_dir / 'summary.json'} and {report}")
    return summary


def _pipeline(
    out_dir: Path, seed: int, plan: DemoPlan, clock: _Progress, progress: bool
) -> tuple[dict[str, float], dict[str, float], str]:
    """The five stages; returns the held-out metrics (before, after) GRPO and the final model's fingerprint."""
    clock.stage(1, "build", "building the task (disjoint train/test splits) and a randomly initialised model")
    task = make_task(plan.task, **task_kwargs(plan, seed))
    tokenizer = build_tokenizer()
    model = build_model(plan.preset, tokenizer, seed)
    clock.done()

    clock.stage(2, "sft", f"SFT cold start: {plan.sft_steps} steps on {plan.n_train} R1-format traces, "
                f"{plan.sft_noise:.0%} of them with a deliberate slip")  # fmt: skip
    result = train_sft(
        sft_config(plan, out_dir / "sft", seed, progress=progress),
        model=model,
        tokenizer=tokenizer,
        task=task,
    )
    _stopped(result, "sft", out_dir)
    clock.done()

    clock.stage(
        3, "eval_before", f"held-out eval after SFT: {plan.n_test} problems x {plan.eval_samples} samples"
    )
    before = held_out_eval(model, tokenizer, task, plan, seed, out_dir / "eval" / "before.json")
    clock.say(f"      pass@1 {before['pass@1']:.1%}, format {before['format_rate']:.1%}")
    clock.done()

    clock.stage(4, "grpo", f"GRPO: {plan.rl_steps} steps x {plan.prompts_per_step} prompts x {plan.group_size} "
                "samples, reward = accuracy + 0.2 x format")  # fmt: skip
    callbacks = [rl_eval_callback(task, plan, seed)] if plan.rl_eval_every else []
    config = rl_config(plan, out_dir, seed, progress=progress)
    result = train_rl(config, callbacks=callbacks, model=model.train(), tokenizer=tokenizer, task=task)
    _stopped(result, "grpo", out_dir)
    clock.done()

    clock.stage(5, "eval_after", "held-out eval after GRPO (same problems, same sampling)")
    after = held_out_eval(model.eval(), tokenizer, task, plan, seed, out_dir / "eval" / "after.json")
    clock.say(f"      pass@1 {after['pass@1']:.1%}, format {after['format_rate']:.1%}")
    clock.done()
    return before, after, weights_fingerprint(model)
