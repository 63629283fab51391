"""The GRPO reference pass through `HFEngine.score`: shared prompts (each group's prompt once) vs the
plain per-row forward, on the same batch, interleaved A/B repeats, process CPU time, medians.

    python bench/score_bench.py [--batch bench|demo|both] [--repeats 7] [--threads 1]

`bench`: `bench/grpo_bench.py`'s batch (33m preset, 4 prompts x 8 samples x 128 completion tokens, its
own arithmetic prompts).  `demo`: the demo's GRPO batch (1m preset, 16 prompts of the demo's task x 8
samples, completion lengths drawn uniformly from 1..64).  Completion tokens are random ids: scoring
costs the same whatever they are.  FLOPs are counted as `bench/roofline.py` counts the reference
(its `forward_flops`), for the tokens each path actually runs through the model.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import interleaved_cpu_times, make_prompts
from roofline import Shape


def _batch(kind: str, tok: Any) -> tuple[str, list[list[int]], list[list[int]]]:
    rng = random.Random(0)
    if kind == "bench":
        texts, group, lens = make_prompts(4, 0), 8, lambda: 128
        preset = "33m"
        prompts = [tok(t)["input_ids"] for t in texts]
    else:
        from rlvr.demo.plan import DemoPlan
        from rlvr.rollout.collect import render_prompt
        from rlvr.tasks import make_task

        plan = DemoPlan()
        task = make_task(plan.task, **plan.task_kwargs, n_train=plan.n_train, n_test=plan.n_test)
        examples = task.examples("train")[: plan.prompts_per_step]
        prompts = [list(render_prompt(tok, task, ex).ids) for ex in examples]
        group, preset = plan.group_size, plan.preset
        lens = lambda: rng.randint(1, plan.max_new_tokens)  # noqa: E731
    rows = [p for p in prompts for _ in range(group)]
    comps = [[rng.randrange(3, len(tok)) for _ in range(lens())] for _ in rows]
    return preset, rows, comps


def _flops(shape: Shape, prompts: list[list[int]], comps: list[list[int]], shared: bool) -> float:
    """roofline.py's count for the tokens each path runs: 2·N per token (N includes the lm_head) plus causal
    attention, 2·L·d·S² for a sequence of S tokens, so 2·L·d·((P + R)² - P²) for R tokens after a cached P."""
    n, attn = 2.0 * shape.matmul_params, 2.0 * shape.layers * shape.hidden
    if not shared:
        return sum(n * (len(p) + len(c)) + attn * (len(p) + len(c)) ** 2 for p, c in zip(prompts, comps))
    distinct = {tuple(p) for p in prompts}
    total = sum(n * len(p) + attn * len(p) ** 2 for p in distinct)  # each prompt once
    for p, c in zip(prompts, comps):  # completion tokens (not the last) against prompt + earlier ones
        run = max(len(c) - 1, 0)
        total += n * run + attn * ((len(p) + run) ** 2 - len(p) ** 2)
    return total


def _scorer(engine: Any, prompts: list[list[int]], comps: list[list[int]]) -> Callable[[int], Any]:
    return lambda r: engine.score(prompts, comps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", choices=["bench", "demo", "both"], default="both")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from rlvr.models.tiny import build_model, build_tokenizer
    from rlvr.rollout.hf import HFEngine

    tok, results = build_tokenizer(), {}
    for kind in (["bench", "demo"] if args.batch == "both" else [args.batch]):
        preset, prompts, comps = _batch(kind, tok)
        model = build_model(preset, tok, 0)
        engines = {s: HFEngine(model, tok, dtype=torch.float32, share_score_prompts=s) for s in (True, False)}
        out = {s: engines[s].score(prompts, comps) for s in (True, False)}  # warm-up, and the agreement
        diff = max(abs(a - b) for x, y in zip(out[True], out[False]) for a, b in zip(x.logprobs, y.logprobs))
        by_name = interleaved_cpu_times({str(s): _scorer(engines[s], prompts, comps) for s in (True, False)}, args.repeats)
        times = {s: by_name[str(s)] for s in (True, False)}
        shape = Shape.from_config(model.config)
        med = {s: statistics.median(v) for s, v in times.items()}
        fl = {s: _flops(shape, prompts, comps, s) for s in (True, False)}
        results[kind] = {
            "preset": preset, "rows": len(prompts), "distinct_prompts": len({tuple(p) for p in prompts}),
            "prompt_tokens": statistics.mean(len(p) for p in prompts),
            "completion_tokens": statistics.mean(len(c) for c in comps),
            "shared_s": med[True], "plain_s": med[False], "speedup": med[False] / med[True],
            "shared_tflop": fl[True] / 1e12, "plain_tflop": fl[False] / 1e12, "flops_saved": 1 - fl[True] / fl[False],
            "max_abs_logprob_diff": diff, "times": {"shared": times[True], "plain": times[False]},
        }  # fmt: skip
        r = results[kind]
        print(f"{kind}: {r['rows']} rows, {r['distinct_prompts']} prompts of ~{r['prompt_tokens']:.0f} tokens, "
              f"completions ~{r['completion_tokens']:.0f}: shared {r['shared_s']:.3f} s, plain {r['plain_s']:.3f} s "
              f"(x{r['speedup']:.3f}); FLOPs {r['shared_tflop']:.4f} vs {r['plain_tflop']:.4f} TFLOP "
              f"({100 * r['flops_saved']:.1f}% saved); max |dlogp| {diff:.2e}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
