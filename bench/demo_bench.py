"""Process CPU time of the demo's SFT and GRPO steps (the exact `rlvr demo` configs), for A/B runs.

    python bench/demo_bench.py sft --steps 40                    # ms per SFT step (median), 1 thread
    python bench/demo_bench.py grpo --steps 8 --init sft.pt      # ms per GRPO step and its phases
    python bench/demo_bench.py sft --profile                     # + torch.profiler's op table
    python bench/demo_bench.py save-sft --steps 600 --out sft.pt # an SFT-trained start for `grpo`

CPU time (`time.process_time`) rather than wall time: the bench box is shared, and one thread's CPU
time is what the step costs.  Run two checkouts alternately (PYTHONPATH=<checkout>) and compare
medians as ratios.  GRPO from a random model samples 64 tokens every time; `--init` a checkpoint of
`save-sft` gives the demo's lengths (~30 tokens).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/

import torch
from _common import interleaved_cpu_times


def _components(quick: bool) -> tuple[Any, Any, Any, Any]:
    from rlvr.demo.plan import PLANS, task_kwargs
    from rlvr.models.tiny import build_model, build_tokenizer
    from rlvr.tasks import make_task

    plan = PLANS["quick" if quick else "full"]
    task = make_task(plan.task, **task_kwargs(plan, 0))
    tokenizer = build_tokenizer()
    return plan, task, tokenizer, build_model(plan.preset, tokenizer, 0)


def _override(config: Any, sets: list[str]) -> Any:
    """`config` with `section.key=value` settings (values parsed as JSON, else strings)."""
    from rlvr.config import parse_config

    data = config.model_dump(mode="json")
    for item in sets:
        key, _, raw = item.partition("=")
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node[part]
        try:
            node[last] = json.loads(raw)
        except json.JSONDecodeError:
            node[last] = raw
    return parse_config(data, kind=data["kind"], source="--set")


def _sft_stage(quick: bool, sets: list[str]) -> Any:
    from rlvr.demo.plan import sft_config
    from rlvr.trainer.run import seed_everything
    from rlvr.trainer.sft import build_sft_stage

    plan, task, tokenizer, model = _components(quick)
    seed_everything(0)
    config = _override(sft_config(plan, Path(tempfile.mkdtemp()), 0, progress=False), sets)
    return build_sft_stage(config, model=model, tokenizer=tokenizer, task=task)


def _grpo_stage(quick: bool, init: str | None, sets: list[str]) -> Any:
    from rlvr.demo.plan import rl_config
    from rlvr.trainer.rl import build_rl_stage
    from rlvr.trainer.run import seed_everything

    plan, task, tokenizer, model = _components(quick)
    if init:
        model.load_state_dict(torch.load(init))
    seed_everything(0)
    config = _override(rl_config(plan, Path(tempfile.mkdtemp()), 0, progress=False), sets)
    stage = build_rl_stage(config, model=model, tokenizer=tokenizer, task=task)
    stage.ready()
    return stage


def _timed(stage: Any, steps: int, warmup: int) -> tuple[list[float], list[dict[str, Any]]]:
    from rlvr.trainer.run import Timer

    times, rows = [], []
    for step in range(1, warmup + steps + 1):
        timer = Timer()
        t0 = time.process_time()
        metrics = stage.step(step, timer)
        dt = time.process_time() - t0
        if step > warmup:
            times.append(dt)
            rows.append({**metrics, **timer.metrics()})
    return times, rows


def _ab(a: Any, b: Any, args: Any) -> None:
    """Alternate one step of `a` and one of `b` (the same step numbers): the box's load hits both alike."""
    from rlvr.trainer.run import Timer

    step = {"a": a, "b": b}
    times = interleaved_cpu_times({k: lambda r, k=k: step[k].step(r + 1, Timer()) for k in step}, args.steps,
                                  warmup=args.warmup)  # fmt: skip
    med = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(
        json.dumps(
            {
                "what": args.what,
                "a_ms": round(med["a"], 1),
                "b_ms": round(med["b"], 1),
                "b_over_a": round(med["b"] / med["a"], 3),
                "set_b": args.set_b,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sft", "grpo", "save-sft"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="the --quick plan's configs")
    ap.add_argument("--init", help="GRPO: start from this state dict (save-sft writes one)")
    ap.add_argument("--out", default="demo_sft.pt")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--set", action="append", default=[], help="section.key=value (JSON) on the stage's config"
    )
    ap.add_argument(
        "--set-b",
        action="append",
        default=None,
        help="A/B in one process: a second stage with these settings (on top of --set), steps alternated",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.what == "save-sft":
        stage = _sft_stage(args.quick, args.set)
        _timed(stage, args.steps, 0)
        torch.save(stage.model.state_dict(), args.out)
        return

    def make(sets: list[str]) -> Any:
        return (
            _sft_stage(args.quick, sets) if args.what == "sft" else _grpo_stage(args.quick, args.init, sets)
        )

    stage = make(args.set)
    if args.set_b is not None:
        _ab(stage, make(args.set + args.set_b), args)
        return
    times, rows = _timed(stage, args.steps, args.warmup)
    phases = sorted({k for r in rows for k in r if k.startswith("time/")})
    out = {
        "what": args.what,
        "threads": args.threads,
        "ms_per_step": round(1000 * statistics.median(times), 1),
        "wall_phases_ms": {
            k: round(1000 * statistics.median(r.get(k, 0.0) for r in rows), 1) for k in phases
        },
        "loss_last": rows[-1].get("loss"),
        "padding_frac": round(statistics.mean(r.get("padding_frac", 0.0) for r in rows), 3),
    }
    if args.what == "grpo":
        out["completion_tokens"] = statistics.mean(r.get("tokens_in", r.get("tokens", 0)) for r in rows)
    print(json.dumps(out))
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            _timed(stage, max(2, args.steps // 4), 0)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30))


if __name__ == "__main__":
    main()
